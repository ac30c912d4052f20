"""The pretrained-LLM probes (paper Fig. 10, App. N), checked offline on a tiny random GPT-2."""

import pytest
import torch

from icl_meta.analysis.llm import (LABELS, METRICS, SMOKE_SENTENCES, Spans, bracketed_prompt, build_prompt,
                                   char_to_token_span, circuit_metrics_llm, encode, metrics_from_attentions,
                                   sample_prompts, tagged_tokens, tiny_gpt2, uniform_baseline)

DEMOS = [("A joy to watch.", "positive"), (" Dull, dull, dull. ", "negative")]


@pytest.fixture(scope="module")
def tiny():
    """A 4-layer random GPT-2 and its in-memory byte-level BPE tokenizer."""
    return tiny_gpt2(seed=0)


def test_prompt_text_and_character_spans():
    """The paper's format exactly; reviews are stripped; each span covers its review or label word."""
    text, spans = build_prompt(DEMOS, "Not bad at all.")
    assert text == ("Review: A joy to watch.\nSentiment: positive\n"
                    "Review: Dull, dull, dull.\nSentiment: negative\n"
                    "Review: Not bad at all.\nSentiment:")
    assert [text[a:b] for a, b in spans.reviews] == ["A joy to watch.", "Dull, dull, dull."]
    assert [text[a:b] for a, b in spans.labels] == ["positive", "negative"]
    assert text[slice(*spans.query)] == "Not bad at all."


def test_char_to_token_span_with_leading_spaces_and_bos():
    """Overlap rule: ' positive' (offsets include the space) belongs to the label; a bare space token
    before a span and a zero-width BOS token do not."""
    # "<bos>Sentiment: positive" with tokens <bos>, 'Sentiment', ':', ' positive'; then ': x' with a lone ' '.
    offsets = [(0, 0), (0, 9), (9, 10), (10, 19), (19, 20), (20, 21), (21, 22)]
    assert char_to_token_span(offsets, (11, 19)) == (3, 4)
    assert char_to_token_span(offsets, (21, 22)) == (6, 7)
    assert char_to_token_span(offsets, (0, 9)) == (1, 2)
    with pytest.raises(ValueError, match="span"):
        char_to_token_span(offsets, (30, 31))


def word_level_tokenizer():
    """A WordLevel tokenizer that splits on whitespace and punctuation (offsets exclude spaces)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([build_prompt(DEMOS, "Not bad at all.")[0]],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.mark.parametrize("kind", ["byte_bpe", "word_level"])
def test_token_spans_decode_to_their_text(tiny, kind):
    """Decoding each span's tokens gives back exactly its review or label (up to spaces), and the tokens
    just outside each span belong to the prompt's frame: ':' or a bare space before; a newline after (or,
    for the word-level tokenizer, which drops newlines, the next 'Sentiment' or 'Review')."""
    tokenizer = tiny[1] if kind == "byte_bpe" else word_level_tokenizer()
    text, spans = build_prompt(DEMOS, "Not bad at all.")
    ids, tok = encode(tokenizer, text, spans)
    ids = ids[0].tolist()

    def words(a, b):
        return tokenizer.decode(ids[a:b]).replace(" ", "")

    pairs = list(zip(tok.reviews + tok.labels + (tok.query,), spans.reviews + spans.labels + (spans.query,)))
    for (a, b), (ca, cb) in pairs:
        assert words(a, b) == text[ca:cb].replace(" ", "")
        assert words(a - 1, a) in (":", "") and words(b, b + 1) in ("\n", "Sentiment", "Review")
    assert tagged_tokens(tokenizer, text, spans)[-1] == (":", "last")


def test_metrics_from_hand_built_attentions():
    """Known attentions -> known numbers. Positions: review1 = 0-1, label1 = 2, review2 = 4, label2 = 5-6,
    last = 8. Two heads that differ by ±d, so the head average is p."""
    S = 9
    p = torch.zeros(2, S, S)
    p[0, 8, 8], p[1, 8, 8] = 0.5, 0.25                       # bigram
    p[0, 8, 2], p[0, 8, 5], p[0, 8, 6] = 0.25, 0.125, 0.125  # label attention L1: (0.25 + 0.25) / 2
    p[1, 8, 5] = 0.5                                         # label attention L2: (0 + 0.5) / 2
    p[0, 2, 0], p[0, 2, 1] = 0.5, 0.25                       # chunk L1, demo 1: 0.75
    p[0, 5, 4], p[0, 6, 4] = 0.5, 0.25                       # chunk L1, demo 2: mean(0.5, 0.25)
    p[1, 2, 3] = 1.0                                         # L2 label attends outside its review: chunk 0
    d = torch.full((2, S, S), 0.0625)
    attn = torch.stack([p + d, p - d], 1)                    # [layers, heads, S, S]
    spans = Spans(reviews=((0, 2), (4, 5)), labels=((2, 3), (5, 7)), query=(7, 8))
    m = metrics_from_attentions(attn, spans)
    assert m["bigram"].tolist() == [0.5, 0.25]
    assert m["label_attention"].tolist() == [0.25, 0.25]
    assert m["chunk_example"].tolist() == [(0.75 + 0.375) / 2, 0.0]


def test_circuit_metrics_llm_shapes_and_range(tiny):
    """[n_layers] per metric, every value a probability mass in [0, 1]; per_prompt adds a prompt axis."""
    model, tokenizer = tiny
    prompts = sample_prompts(SMOKE_SENTENCES, n=3, seed=1)
    m = circuit_metrics_llm(model, tokenizer, prompts)
    assert set(m) == set(METRICS)
    for v in m.values():
        assert v.shape == (model.config.n_layer,) and ((v >= 0) & (v <= 1)).all()
    rows = circuit_metrics_llm(model, tokenizer, prompts, per_prompt=True)
    assert rows["bigram"].shape == (3, model.config.n_layer)
    assert torch.allclose(torch.tensor(rows["chunk_example"].mean(0)), torch.tensor(m["chunk_example"]))


def test_sample_prompts_one_of_each_label_and_seeded():
    """Each prompt shows one positive and one negative demo, never its own query; same seed, same prompts."""
    prompts = sample_prompts(SMOKE_SENTENCES, seed=3)
    assert len(prompts) == len(SMOKE_SENTENCES) and prompts == sample_prompts(SMOKE_SENTENCES, seed=3)
    for text, spans in prompts:
        assert sorted(text[a:b] for a, b in spans.labels) == sorted(LABELS)
        assert text[slice(*spans.query)] not in [text[a:b] for a, b in spans.reviews]


def test_tiny_gpt2_is_deterministic_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    (m1, t1), (m2, t2) = tiny_gpt2(seed=5, n_layer=1, n_head=2, n_embd=16), tiny_gpt2(seed=5, n_layer=1, n_head=2,
                                                                                     n_embd=16)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert t1.get_vocab() == t2.get_vocab()
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


@pytest.mark.parametrize("call, name", [
    (lambda: build_prompt([("Fine.", "neutral")], "Ok."), "demos"),
    (lambda: build_prompt([], "Ok."), "demos"),
    (lambda: build_prompt(DEMOS, "  "), "query"),
    (lambda: sample_prompts([("Fine.", "good")]), "data"),
    (lambda: sample_prompts(SMOKE_SENTENCES, n=0), "n"),
    (lambda: sample_prompts([("Fine.", "positive"), ("Bad.", "negative")]), "data"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_bad_model_or_prompts_name_the_parameter(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="prompts"):
        circuit_metrics_llm(model, tokenizer, [])
    model.train()
    try:
        with pytest.raises(ValueError, match="model"):
            circuit_metrics_llm(model, tokenizer, sample_prompts(SMOKE_SENTENCES, n=1))
    finally:
        model.eval()


def test_load_pretrained_from_a_saved_directory(tiny, tmp_path):
    """The Hub path of the chapter, offline: a saved model reloads with eager attention, same numbers."""
    from icl_meta.analysis.llm import load_pretrained

    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_pretrained(str(tmp_path))
    prompts = sample_prompts(SMOKE_SENTENCES, n=2)
    a, b = circuit_metrics_llm(model, tokenizer, prompts), circuit_metrics_llm(loaded, tok, prompts)
    assert all((a[k] == b[k]).all() for k in METRICS)


def test_other_architectures_and_missing_attentions(tiny):
    """Any causal LM with eager attention works (a tiny Llama); one that returns no attentions is refused."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = tiny[1]
    prompts = sample_prompts(SMOKE_SENTENCES, n=1)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2, attn_implementation="eager"))
    assert circuit_metrics_llm(llama.eval(), tokenizer, prompts)["bigram"].shape == (2,)
    sdpa = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=16,
                                      attn_implementation="sdpa"))
    with pytest.raises(ValueError, match="model"):
        circuit_metrics_llm(sdpa.eval(), tokenizer, prompts)


def test_uniform_baseline_is_even_causal_attention(tiny):
    """With even causal attention the last token's self-weight is 1/S and Label Attention the label tokens'
    share of the prompt; the baseline averages those over prompts."""
    _, tokenizer = tiny
    prompts = sample_prompts(SMOKE_SENTENCES, 3, seed=0)
    base = uniform_baseline(tokenizer, prompts)
    sizes, shares = [], []
    for text, spans in prompts:
        ids, tok = encode(tokenizer, text, spans)
        sizes.append(ids.shape[1])
        shares.append(sum(b - a for a, b in tok.labels) / len(tok.labels) / ids.shape[1])
    assert set(base) == set(METRICS)
    assert base["bigram"] == pytest.approx(sum(1 / s for s in sizes) / len(sizes))
    assert base["label_attention"] == pytest.approx(sum(shares) / len(shares))


def test_bracketed_prompt_names_every_span_and_marks_the_last_token(tiny):
    _, tokenizer = tiny
    text, spans = build_prompt(DEMOS, "Not bad at all.")
    shown = bracketed_prompt(tokenizer, text, spans)
    assert shown.count("[") == shown.count("]") == 5  # two reviews, two labels, the query
    for role, words in [("review1", "A joy to watch."), ("label1", "positive"), ("label2", "negative"),
                        ("query", "Not bad at all.")]:
        inside = shown.split(f"[{role}:")[1].split("]")[0]
        assert inside.replace(" ", "") == words.replace(" ", "")
    assert shown.endswith("▶:") and "⏎\n" in shown
