"""The three circuit metrics in a pretrained causal LM on 2-shot SST-2 prompts (paper Fig. 10, App. N).

The paper asks whether the circuits of its toy transformer also appear in a real LM. Each prompt is

    Review: {review 1}\\nSentiment: {label 1}\\nReview: {review 2}\\nSentiment: {label 2}\\nReview: {query}\\nSentiment:

and, per layer with attention averaged over heads (Methods §Metrics carried over to text):
Bigram = the last token's attention to itself, Label Attention = the last token's attention to each label
word (summed over its tokens, averaged over the demos), Chunk Example = each label's attention to its own
review (summed over the review's tokens, averaged over label tokens and demos).

Works for any Hugging Face causal LM that returns attentions (load it with attn_implementation="eager")
and any fast tokenizer (the spans come from its offset mapping). `tiny_gpt2` builds a random GPT-2 with
a tokenizer trained in memory, so all of this runs offline as a smoke test.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass

import numpy as np
import torch

from ..probes import METRICS

LABELS = ("positive", "negative")

Span = tuple[int, int]  # half-open [start, end)

# Short reviews written for the offline smoke test (5 positive, 5 negative). Not SST-2.
SMOKE_SENTENCES: list[tuple[str, str]] = [
    ("A warm, funny film with a terrific cast.", "positive"),
    ("The story is clever and the ending is moving.", "positive"),
    ("I loved every minute of this charming comedy.", "positive"),
    ("Beautifully shot and wonderfully acted.", "positive"),
    ("A smart, joyful ride that never lets up.", "positive"),
    ("The plot is dull and the jokes fall flat.", "negative"),
    ("Far too long, and the acting is wooden.", "negative"),
    ("A boring mess with nothing to say.", "negative"),
    ("I wanted to leave after twenty minutes.", "negative"),
    ("Clumsy dialogue and a lazy, predictable script.", "negative"),
]


@dataclass(frozen=True)
class Spans:
    """Half-open [start, end) ranges of each demo's review and label and of the query review, counted in
    characters of the prompt text (from build_prompt) or in tokens (from token_spans)."""

    reviews: tuple[Span, ...]
    labels: tuple[Span, ...]
    query: Span


def build_prompt(demos: list[tuple[str, str]], query: str) -> tuple[str, Spans]:
    """The paper's few-shot prompt and the character spans of every review and label word.

    Reviews are stripped of surrounding whitespace (SST-2 sentences end with a space, which would
    otherwise become a token of its own before the newline).
    """
    if not demos:
        raise ValueError("demos: need at least one (review, label) pair")
    text, reviews, labels = "", [], []
    for review, label in demos:
        if label not in LABELS:
            raise ValueError(f"demos: label must be one of {LABELS}, got {label!r}")
        review = review.strip()
        if not review:
            raise ValueError("demos: a review is empty")
        text += "Review: "
        reviews.append((len(text), len(text) + len(review)))
        text += review + "\nSentiment: "
        labels.append((len(text), len(text) + len(label)))
        text += label + "\n"
    query = query.strip()
    if not query:
        raise ValueError("query: the query review is empty")
    text += "Review: "
    q = (len(text), len(text) + len(query))
    text += query + "\nSentiment:"
    return text, Spans(tuple(reviews), tuple(labels), q)


def char_to_token_span(offsets: list[tuple[int, int]], span: Span) -> Span:
    """Token range [first, last + 1) of the tokens whose characters overlap span.

    offsets: a fast tokenizer's offset mapping. A GPT-2 token such as " positive" carries its leading
    space in its offsets; it overlaps the word's span and is included, while a token that is only the
    space before the span does not overlap it. Zero-width tokens (BOS) never overlap anything.
    """
    a, b = span
    hits = [i for i, (s, e) in enumerate(offsets) if s < b and e > a and e > s]
    if not hits:
        raise ValueError(f"span: no token overlaps characters {span}")
    return hits[0], hits[-1] + 1


def token_spans(offsets: list[tuple[int, int]], spans: Spans) -> Spans:
    """Character spans -> token spans, through the offset mapping."""
    return Spans(tuple(char_to_token_span(offsets, s) for s in spans.reviews),
                 tuple(char_to_token_span(offsets, s) for s in spans.labels),
                 char_to_token_span(offsets, spans.query))


def encode(tokenizer, text: str, spans: Spans) -> tuple[torch.Tensor, Spans]:
    """Token ids [1, S] of the prompt and its token spans (needs a fast tokenizer for the offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("tokenizer: need a fast (Rust) tokenizer, which returns offsets")
    enc = tokenizer(text, return_offsets_mapping=True)
    return torch.tensor([enc["input_ids"]]), token_spans(enc["offset_mapping"], spans)


def metrics_from_attentions(attn: torch.Tensor, spans: Spans) -> dict[str, np.ndarray]:
    """Per-layer Bigram, Label Attention and Chunk Example of one prompt's attentions.

    attn: [n_layers, n_heads, S, S] (row = query position); spans: token spans. Heads are averaged
    first; the last position (the one that predicts the label) is the query row.
    """
    p = attn.float().mean(1)
    last = p.shape[-1] - 1
    label_att = torch.stack([p[:, last, a:b].sum(-1) for a, b in spans.labels]).mean(0)
    chunk = torch.stack([p[:, la:lb, ra:rb].sum(-1).mean(-1)
                         for (la, lb), (ra, rb) in zip(spans.labels, spans.reviews)]).mean(0)
    out = {"bigram": p[:, last, last], "label_attention": label_att, "chunk_example": chunk}
    return {k: v.cpu().numpy() for k, v in out.items()}


@torch.no_grad()
def prompt_metrics(model, tokenizer, text: str, spans: Spans) -> dict[str, np.ndarray]:
    """The three metrics per layer for one prompt (text and character spans from build_prompt)."""
    ids, tok = encode(tokenizer, text, spans)
    out = model(input_ids=ids.to(model.device), output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise ValueError("model: returned no attentions; load it with attn_implementation='eager'")
    return metrics_from_attentions(torch.stack(out.attentions)[:, 0], tok)


def circuit_metrics_llm(model, tokenizer, prompts: list[tuple[str, Spans]],
                        per_prompt: bool = False) -> dict[str, np.ndarray]:
    """Per-layer metrics averaged over prompts ([n_layers] each), or [n_prompts, n_layers] with per_prompt.

    Prompts run one at a time (their lengths differ, and no padding can leak into the attention).
    """
    if not prompts:
        raise ValueError("prompts: need at least one prompt")
    if model.training:
        raise ValueError("model: call model.eval() first (dropout would perturb the attention)")
    rows = [prompt_metrics(model, tokenizer, text, spans) for text, spans in prompts]
    stacked = {k: np.stack([r[k] for r in rows]) for k in METRICS}
    return stacked if per_prompt else {k: v.mean(0) for k, v in stacked.items()}


def uniform_baseline(tokenizer, prompts: list[tuple[str, Spans]]) -> dict[str, float]:
    """The three metrics, averaged over prompts, if every row attended evenly to all positions up to
    itself: the level a layer's metric shows without any pattern (the same at every layer)."""
    rows = []
    for text, spans in prompts:
        ids, tok = encode(tokenizer, text, spans)
        causal = torch.tril(torch.ones(ids.shape[1], ids.shape[1]))
        rows.append(metrics_from_attentions((causal / causal.sum(1, keepdim=True))[None, None], tok))
    return {k: float(np.mean([r[k] for r in rows])) for k in METRICS}


def sample_prompts(data: list[tuple[str, str]], n: int | None = None, seed: int = 0) -> list[tuple[str, Spans]]:
    """n seeded 2-shot prompts from (sentence, label) pairs (all of data as queries when n is None).

    Queries are a seeded permutation of data (each sentence at most once). Each prompt's demos are one
    positive and one negative sentence drawn from the rest of data, in random order, so both labels are
    always shown and the last label shown is not a fixed cue.
    """
    labels = [label for _, label in data]
    if any(label not in LABELS for label in labels):
        raise ValueError(f"data: every label must be one of {LABELS}")
    if n is not None and not 1 <= n <= len(data):
        raise ValueError(f"n: must be between 1 and len(data) = {len(data)}, got {n}")
    rng = np.random.default_rng(seed)
    prompts = []
    for q in rng.permutation(len(data))[:n]:
        demos = []
        for word in LABELS:
            pool = [i for i, label in enumerate(labels) if label == word and i != q]
            if not pool:
                raise ValueError(f"data: needs a {word} sentence besides each query")
            demos.append(data[pool[rng.integers(len(pool))]])
        if rng.random() < 0.5:
            demos.reverse()
        prompts.append(build_prompt(demos, data[q][0]))
    return prompts


def tagged_tokens(tokenizer, text: str, spans: Spans) -> list[tuple[str, str]]:
    """(token text, role) for every token of a prompt; role is 'review1', 'label1', ..., 'query',
    'last' (the position the metrics read from) or ''. For showing what the spans cover."""
    ids, tok = encode(tokenizer, text, spans)
    roles = [""] * ids.shape[1]
    named = [(f"review{i + 1}", s) for i, s in enumerate(tok.reviews)]
    named += [(f"label{i + 1}", s) for i, s in enumerate(tok.labels)] + [("query", tok.query)]
    for role, (a, b) in named:
        roles[a:b] = [role] * (b - a)
    roles[-1] = "last"
    return [(tokenizer.decode([i]), r) for i, r in zip(ids[0].tolist(), roles)]



def bracketed_prompt(tokenizer, text: str, spans: Spans) -> str:
    """The prompt as its tokens with every span bracketed and named ("[label1: positive]"), the last token
    marked ▶ and newlines shown as ⏎: what a reader checks to trust that the spans cover the right words."""
    out, open_role = "", ""
    for token, role in tagged_tokens(tokenizer, text, spans):
        if role != open_role and open_role not in ("", "last"):
            out += "]"
        if role != open_role and role not in ("", "last"):
            out += f"[{role}:"
        out += ("▶" if role == "last" else "") + token.replace("\n", "⏎\n")
        open_role = role
    return out

# ---- models ---------------------------------------------------------------------------------------

def load_pretrained(name: str = "gpt2-xl"):
    """A Hub causal LM with eager attention (so it returns attentions), in eval mode, on GPU if there is
    one, and its tokenizer. Needs network access to the Hugging Face Hub (or a filled cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="eager")
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, AutoTokenizer.from_pretrained(name)


def tiny_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (GPT-2's scheme: leading spaces belong to the next word) trained in
    memory on texts. Every byte is in its vocabulary, so it encodes any text. Deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def tiny_gpt2(sentences: list[tuple[str, str]] = SMOKE_SENTENCES, seed: int = 0, n_layer: int = 4,
              n_head: int = 4, n_embd: int = 64):
    """A randomly initialised GPT-2 (eager attention, eval mode) and a tokenizer trained on the
    sentences and the prompt words: the offline stand-in for a pretrained LM. Seeded; leaves the global
    torch RNG untouched."""
    from transformers import GPT2Config, GPT2LMHeadModel

    texts = [build_prompt([(s, label)], s)[0] for s, label in sentences] + [" ".join(LABELS)]
    tokenizer = tiny_tokenizer(texts)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        attn_implementation="eager")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config).eval()
    return model, tokenizer


def hub_available(timeout: float = 3.0) -> bool:
    """True when `datasets` is installed and huggingface.co answers (e.g. in Colab); False offline."""
    if importlib.util.find_spec("datasets") is None or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:  # no network: the chapter falls back to its offline smoke test
        return False
    return True
