"""The fast training path (issue 16) computes what the previous one did: the sampler draws bit-identical batches,
and the model's blocked-order forward gives the logits, loss and gradients of the previous path
(bench._previous_logits) and of the explicit path (full=True, return_attn=True) to float rounding."""

import copy

import pytest
import torch
import torch.nn.functional as F

from icl_meta import Config, Model, loss_and_correct, make_instance, sample
from icl_meta.bench import _previous_logits
from icl_meta.model import _SoftmaxAttention
from icl_meta.task import KINDS, Batch, generator, zipf

RTOL = 1e-5  # of the largest |value| of each compared tensor


def previous_sample(inst, cfg, n, g, kind="train"):
    """task.sample as it was before issue 16 (out-of-place arithmetic), the reference for bit-identical batches."""
    dev = cfg.device
    N, B, K, L, D = cfg.num_seq, cfg.burstiness, cfg.num_classes, cfg.num_labels, cfg.content_dim
    n_ctx = cfg.n_ctx_classes
    rows = torch.arange(n, device=dev)

    def shuffle(x):
        return x.gather(1, torch.rand(x.shape, generator=g, device=dev).argsort(dim=1))

    if cfg.beta == 0:
        task = torch.randint(cfg.num_tasks, (n,), generator=g, device=dev)
    else:
        task = torch.multinomial(zipf(cfg.num_tasks, cfg.beta, dev), n, replacement=True, generator=g)
    if kind == "copy":
        means = torch.randn(n, n_ctx, D, generator=g, device=dev) / D**0.5
        fresh_labels = torch.rand(n, L, generator=g, device=dev).argsort(dim=1)[:, :n_ctx]
        slots = shuffle(torch.arange(n_ctx, device=dev).repeat_interleave(B).expand(n, N))
        q_slot = torch.randint(n_ctx, (n, 1), generator=g, device=dev)
        centres = means[rows[:, None], torch.cat([slots, q_slot], dim=1)]
        labels, target = fresh_labels.gather(1, slots), fresh_labels.gather(1, q_slot)[:, 0]
        classes = torch.full((n, N + 1), -1, device=dev)
    else:
        n_pick = min(n_ctx + 1, K)
        u = torch.rand((n, K), generator=g, device=dev).clamp_(1e-20, 1.0 - 1e-7)
        picked = (torch.log(zipf(K, cfg.alpha, dev)) + -torch.log(-torch.log(u))).topk(n_pick, dim=1).indices
        distinct = picked[:, :n_ctx]
        ctx = shuffle(distinct.repeat_interleave(B, dim=1))
        if cfg.query_rule == "uniform":
            query = torch.randint(K, (n,), generator=g, device=dev)
        else:
            query = picked[:, -1] if n_pick > n_ctx else distinct[:, 0]
        if cfg.p_bursty > 0:
            in_ctx = distinct.gather(1, torch.randint(n_ctx, (n, 1), generator=g, device=dev))[:, 0]
            query = torch.where(torch.rand(n, generator=g, device=dev) < cfg.p_bursty, in_ctx, query)
        classes = torch.cat([ctx, query[:, None]], dim=1)
        centres, labels, target = inst.means[classes], inst.table[task[:, None], ctx], inst.table[task, query]
    noise = torch.randn(centres.shape, generator=g, device=dev) / D**0.5
    items = (centres + cfg.eps * noise) / (1 + cfg.eps**2) ** 0.5
    if kind == "random_label":
        labels = shuffle(labels)
    elif kind == "in_weights":
        labels = torch.randint(L, labels.shape, generator=g, device=dev)
    offset = (torch.randint(cfg.pos_dim - N, (n, 1), generator=g, device=dev) if cfg.random_offset
              else torch.zeros(n, 1, dtype=torch.long, device=dev))
    return Batch(items, labels, target, task, classes, offset + torch.arange(N + 1, device=dev))


SAMPLER_CONFIGS = [{}, {"random_offset": True}, {"burstiness": 2, "p_bursty": 0.25}, {"alpha": 1.0, "beta": 1.0},
                   {"query_rule": "uniform", "eps": 0.0}, {"num_seq": 8, "num_labels": 8},
                   {"label_table": "scc_theory", "num_tasks": 2, "num_labels": 64}]


@pytest.mark.parametrize("changes", SAMPLER_CONFIGS)
def test_sampler_draws_the_previous_batches_bit_for_bit(changes):
    """Every kind, three batches in a row from one generator: the same tensors (dtype, shape, bits) as the
    previous sampler, and the generator left in the same state."""
    cfg = Config(**changes)
    inst = make_instance(cfg)
    for kind in KINDS:
        if kind == "copy" and cfg.n_ctx_classes > cfg.num_labels:
            continue
        g_new, g_old = generator(3), generator(3)
        for _ in range(3):
            new, old = sample(inst, cfg, 97, g_new, kind), previous_sample(inst, cfg, 97, g_old, kind)
            for name in ("items", "labels", "target", "task", "classes", "positions"):
                a, b = getattr(new, name), getattr(old, name)
                assert a.dtype == b.dtype and torch.equal(a, b), (kind, name)
        assert torch.equal(g_new.get_state(), g_old.get_state()), kind


def assert_close(new, ref, what):
    """new equals ref to RTOL of ref's largest magnitude."""
    assert torch.allclose(new, ref, rtol=0, atol=RTOL * ref.abs().max().item() + 1e-30), what


def targets(cfg, batch):
    """The labels the readout positions are trained on [B, R] (as loss_and_correct reads them)."""
    return torch.cat([batch.labels, batch.target[:, None]], 1) if cfg.readout == "all_labels" else batch.target[:, None]


def loss_and_grads(model, logits_of, batch):
    """Loss and parameter gradients of a copy of model, its logits computed by logits_of(copy, batch)."""
    m = copy.deepcopy(model)
    logits = logits_of(m, batch)
    loss = F.cross_entropy(logits.flatten(0, 1), targets(m.cfg, batch).flatten())
    loss.backward()
    return logits.detach(), loss.detach(), {k: p.grad for k, p in m.named_parameters()}


def trained_looking(cfg):
    """A model of cfg with its parameters moved off the init (biases nonzero), so every gradient is exercised."""
    model = Model(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


VARIANTS = [{}, {"n_heads": 4}, {"block": "standard"}, {"readout": "all_labels"},
            {"masks": ("bigram", "label_attention")}, {"masks": ("chunk_example", "label_attention")},
            {"n_layers": 3}, {"n_layers": 1}, {"w_o": True}, {"random_offset": True},
            {"block": "standard", "n_heads": 2, "readout": "all_labels", "n_layers": 3}]


@pytest.mark.parametrize("changes", VARIANTS)
def test_fast_path_matches_previous_and_explicit_paths(changes, gen):
    """model(batch) (blocked order, custom attention) gives the logits, loss and gradients of the previous path
    and of the explicit full path, and loss_and_correct reads them as before."""
    cfg = Config(**changes)
    model = trained_looking(cfg)
    batch = sample(make_instance(cfg), cfg, 64, gen)
    fast = loss_and_grads(model, lambda m, b: m(b), batch)
    references = {"previous": loss_and_grads(model, _previous_logits, batch),
                  "explicit": loss_and_grads(model, lambda m, b: m(b, full=True, return_attn=True)[0], batch)}
    for name, (logits, loss, grads) in references.items():
        assert_close(fast[0], logits, f"{name} logits")
        assert_close(fast[1], loss, f"{name} loss")
        for k, g in grads.items():
            assert_close(fast[2][k], g, f"{name} gradient of {k}")
    loss, correct = loss_and_correct(model, batch)
    assert_close(loss.detach(), references["previous"][1], "loss_and_correct")
    assert torch.equal(correct, fast[0][:, -1].argmax(-1) == batch.target)


@pytest.mark.parametrize("changes", [{}, {"n_heads": 4, "readout": "all_labels"}])
def test_fast_path_applies_a_gate_as_the_explicit_path(changes, gen):
    """A surgery gate (post-softmax factors, some edges cut) gives the explicit path's logits and gradients."""
    cfg = Config(**changes)
    model = trained_looking(cfg)
    g = torch.Generator().manual_seed(2)
    S = cfg.seq_len
    model.gate = torch.rand(cfg.n_layers, S, S, generator=g) * (torch.rand(cfg.n_layers, S, S, generator=g) > 0.3)
    batch = sample(make_instance(cfg), cfg, 32, gen)
    fast = loss_and_grads(model, lambda m, b: m(b), batch)
    explicit = loss_and_grads(model, lambda m, b: m(b, full=True, return_attn=True)[0], batch)
    for new, ref, what in zip(fast[:2], explicit[:2], ("logits", "loss")):
        assert_close(new, ref, what)
    for k, grad in explicit[2].items():
        assert_close(fast[2][k], grad, k)


def test_fast_path_without_grad_is_the_same_function(gen):
    """Under no_grad (evaluation) the fast path returns the logits it returns with autograd on."""
    cfg = Config()
    model = trained_looking(cfg)
    batch = sample(make_instance(cfg), cfg, 64, gen)
    with torch.no_grad():
        plain = model(batch)
    assert torch.equal(plain, model(batch).detach())


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_softmax_attention_backward_is_the_gradient(gated, shared):
    """_SoftmaxAttention's hand-written backward passes torch's numerical gradient check (float64), with a causal
    mask, a scale, q's rows fewer than the keys', a gate, and the keys as values (v None)."""
    g = torch.Generator().manual_seed(0)
    N, R, S, c = 3, 2, 5, 4

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    q, k, v = leaf(N, R, c), leaf(N, S, c), leaf(N, S, 3)
    bias = torch.zeros(R, S, dtype=torch.float64).masked_fill(torch.ones(R, S).triu(S - R + 1).bool(), float("-inf"))
    gate = torch.rand(R, S, generator=g, dtype=torch.float64) if gated else None
    if shared:
        assert torch.autograd.gradcheck(lambda q, k: _SoftmaxAttention.apply(q, k, None, bias, 0.7, gate), (q, k))
    else:
        assert torch.autograd.gradcheck(lambda q, k, v: _SoftmaxAttention.apply(q, k, v, bias, 0.7, gate), (q, k, v))


def test_fast_path_compiles_as_one_graph(gen):
    """torch.compile traces the training forward whole (no graph break, e.g. at _SoftmaxAttention), so the
    compiled path (trainer.runnable) runs it as one graph."""
    import torch._dynamo

    cfg = Config()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(Model(cfg))(sample(make_instance(cfg), cfg, 8, gen))
    torch._dynamo.reset()
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons


def test_compiled_step_is_the_eager_step_to_float_rounding():
    """trainer.compiled_step (loss and gradient as one compiled graph, then SGD's foreach update) moves the
    parameters as eager_step (autograd, torch.optim.SGD) does, step after step, on a config that takes the
    other branches of the forward (several heads, the standard block, the loss at every label)."""
    from icl_meta.trainer import compiled_step, eager_step

    cfg = Config(batch_size=32, n_heads=2, block="standard", readout="all_labels")
    inst, eager, compiled = make_instance(cfg), Model(cfg), Model(cfg)
    steps = (eager_step(eager, eager), compiled_step(compiled))
    streams = (generator(1), generator(1))
    for _ in range(5):
        (la, ca), (lb, cb) = (step(sample(inst, cfg, cfg.batch_size, g)) for step, g in zip(steps, streams))
        assert torch.allclose(la, lb, rtol=1e-5) and torch.equal(ca, cb)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=RTOL * a.abs().max().item()), name
