"""The network of Methods §Model and its variants.

Default: embed -> attention layer 1 -> attention layer 2 -> Linear+ReLU -> Linear, read at the query.
Attention is causal, unscaled (no 1/sqrt(d)), with no output projection and no LayerNorm, and the
residual h <- h + attn(h). Every forward can return the attention weights of every layer and head.

Training only needs the last layer's output at the readout positions, so by default the last layer
computes queries (and its MLP) for those rows alone; `full=True` computes every row, for the probes.
That default path also lays the sequence out in blocked order, the N+1 items then the N labels, with the
masks permuted to match: the same function (attention sees positions only through its mask and the item
tokens' one-hot), but the sequence is one concatenation of two blocks and the readout rows a slice; its
attention is `_SoftmaxAttention`, with a backward written for these sizes (see Model.forward).

An attention layer may carry a `Patch` (activation patching, `icl_meta.analysis.patching`): unset by default,
and only a layer that has one takes the slower explicit path (the model then keeps sequence order, which the
patch's edges index).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .task import Batch


def mask_matrix(name: str, num_seq: int) -> torch.Tensor:
    """Boolean [S, S] matrix of allowed attention (row attends to column) for a circuit mask (Methods §Metrics).

    Positions are 0-based: item k at 2k, label k at 2k+1, query at 2N. Rows the mask does not restrict
    stay causal.
    """
    S, q = 2 * num_seq + 1, 2 * num_seq
    allowed = torch.ones(S, S).tril().bool()
    if name == "bigram":
        allowed[q] = False
        allowed[q, q] = True
    elif name == "label_attention":
        allowed[q] = False
        allowed[q, 1:q:2] = True
    elif name == "chunk_example":
        for k in range(num_seq):
            allowed[2 * k + 1] = False
            allowed[2 * k + 1, 2 * k] = True
    elif name != "none":
        raise ValueError(f"unknown mask name {name!r}")
    return allowed


def readout_positions(cfg: Config) -> torch.Tensor:
    """Sequence positions whose outputs are trained: the query, or every item (all-labels head)."""
    if cfg.readout == "all_labels":
        return torch.arange(0, cfg.seq_len, 2)
    return torch.tensor([cfg.seq_len - 1])


def _normal(shape: tuple[int, ...], std: float, g: torch.Generator) -> nn.Parameter:
    return nn.Parameter(torch.randn(shape, generator=g) * std)


def _linear(fan_in: int, fan_out: int, init: str, g: torch.Generator) -> tuple[nn.Parameter, nn.Parameter]:
    """Weight [fan_in, fan_out] and bias of one classifier layer.

    "normal": weight N(0, 1/fan_in), bias zero (our default); "torch_linear": what `nn.Linear` draws by
    default and the authors' code used, weight and bias both U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    if init == "normal":
        return _normal((fan_in, fan_out), fan_in**-0.5, g), nn.Parameter(torch.zeros(fan_out))
    bound = fan_in**-0.5
    weight = (torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound
    return nn.Parameter(weight), nn.Parameter((torch.rand(fan_out, generator=g) * 2 - 1) * bound)


PATCH_KINDS = ("pattern", "value")


@dataclass(frozen=True)
class Patch:
    """An intervention on one attention layer: on the cells `edges` (bool [S, S], row attends to column) the
    layer uses `source` of its own tensor instead of the tensor itself.

    kind "pattern": the attention weights on the edges are replaced. kind "value": the weights stay, but what
    row r reads from column s is replaced, out[r] = sum_s att[r, s] v'[r, s] with v'[r, s] = source(v)[s] on
    the edges and v[s] elsewhere. `source` maps the batch's tensor [B, H, S, *] to its replacement (same shape
    or broadcastable to it): the batch mean, another sequence's, ... It reads the tensors of the same forward,
    which for a layer below every other patched one are those of the unpatched model.
    """

    edges: torch.Tensor
    kind: str
    source: Callable[[torch.Tensor], torch.Tensor]

    def __post_init__(self):
        if self.kind not in PATCH_KINDS:
            raise ValueError(f"kind must be one of {PATCH_KINDS}, got {self.kind!r}")


class _SoftmaxAttention(torch.autograd.Function):
    """softmax(q k^T * scale + bias) * gate @ v for q [N, R, c], k [N, S, c], v [N, S, e], bias and gate
    broadcastable to [N, R, S] (gate None: no gate; v None: the keys are the values, as in Attention._query_rows,
    passed once since torch.compile cannot trace one tensor given twice).

    The backward is autograd's, written so that every batched matmul yields an [N, R or S, *] result: through
    q @ k.transpose autograd computes k's gradient as an [N, c, S] product (5x slower on CPU at S = 9) and passes
    it on transposed. The fused kernel (scaled_dot_product_attention) was slower still at this size.
    """

    generate_vmap_rule = True  # the ensemble trainer vmaps the model (icl_meta.ensemble)

    @staticmethod
    def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, bias: torch.Tensor, scale: float,
                gate: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The output, and the weights before the gate for the backward (not differentiable)."""
        att = torch.softmax(torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale), dim=-1)
        return torch.bmm(att if gate is None else att * gate, k if v is None else v), att

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple) -> None:
        q, k, v, _, scale, gate = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(q, k, v, output[1], gate)
        ctx.scale = scale

    @staticmethod
    def backward(ctx, dout: torch.Tensor, _datt: None):
        q, k, v, att, gate = ctx.saved_tensors
        gated = att if gate is None else att * gate
        dgated = torch.bmm(dout, (k if v is None else v).transpose(1, 2))
        ds = torch._softmax_backward_data(dgated if gate is None else dgated * gate, att, -1, att.dtype)
        if ctx.scale != 1:
            ds = ds * ctx.scale
        need = ctx.needs_input_grad
        dq = torch.bmm(ds, k) if need[0] else None
        dv = torch.bmm(gated.transpose(1, 2), dout) if need[1] or need[2] else None
        if v is None:  # k's gradient as key and as value
            return dq, (torch.baddbmm(dv, ds.transpose(1, 2), q) if need[1] else None), None, None, None, None
        dk = torch.bmm(ds.transpose(1, 2), q) if need[1] else None
        return dq, dk, (dv if need[2] else None), None, None, None


class Attention(nn.Module):
    """Multi-head causal self-attention with fused W_Q, W_K, W_V initialised N(0, 1/d_model)."""

    def __init__(self, d: int, n_heads: int, w_o: bool, scaled: bool, g: torch.Generator):
        super().__init__()
        self.n_heads, self.scaled = n_heads, scaled
        self.w_qkv = _normal((d, 3 * d), d**-0.5, g)
        self.w_o = _normal((d, d), d**-0.5, g) if w_o else None
        self.patch: Patch | None = None  # set on a copy by analysis.patching; never saved

    def forward(self, x: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | slice | None, need_weights: bool,
                proj: torch.Tensor | None = None,
                gate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, S, d], bias [S, S] additive mask; rows: the query positions to compute, an index tensor or a
        slice (None: all); proj: x @ w_qkv when the caller has it cheaper (the first layer, see Model.embed_proj);
        gate: [S, S] factors applied to the weights after the softmax (circuit surgery), None for none.

        With need_weights or a set self.patch the layer takes the explicit path: every row, the weights
        materialised (the patch, applied after the gate, needs every position's values), the requested rows kept.
        Otherwise the weights are never returned and the layer computes only what its output needs.

        Returns the output [B, R, d] and, if need_weights, the attention weights [B, H, R, S].
        """
        scale = (x.shape[-1] // self.n_heads) ** -0.5 if self.scaled else 1.0
        att = None
        if need_weights or self.patch is not None:
            out, att = self._explicit(x, bias, rows, proj, gate, scale)
        elif rows is not None:
            out = self._query_rows(x, bias, rows, gate, scale)
        else:
            out = self._all_rows(x, bias, proj, gate, scale)
        if self.w_o is not None:
            out = out @ self.w_o
        return out, att

    def _explicit(self, x: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | slice | None,
                  proj: torch.Tensor | None, gate: torch.Tensor | None,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Output [B, R, d] and weights [B, H, R, S], written out with autograd's own matmuls and softmax."""
        Bn, S, d = x.shape
        H, patch = self.n_heads, self.patch
        qkv = x @ self.w_qkv if proj is None else proj
        q, k, v = (t.view(Bn, S, H, d // H).transpose(1, 2) for t in qkv.split(d, -1))
        att = torch.softmax(q @ k.transpose(-1, -2) * scale + bias, dim=-1)
        if gate is not None:
            att = att * gate
        if patch is not None and patch.kind == "pattern":
            att = torch.where(patch.edges, patch.source(att), att)
        if patch is not None and patch.kind == "value":  # the edges read the source's values
            out = (att * ~patch.edges) @ v + (att * patch.edges) @ patch.source(v)
        else:
            out = att @ v
        if rows is not None:
            att, out = att[:, :, rows], out[:, :, rows]
        return out.transpose(1, 2).reshape(Bn, out.shape[2], d), att

    def _query_rows(self, x: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | slice,
                    gate: torch.Tensor | None, scale: float) -> torch.Tensor:
        """Output [B, R, d] of the R rows alone (the last layer in training).

        Scores go through W_Q W_K^T and x is averaged before W_V, so keys and values are never projected for
        every position: same function, far fewer FLOPs. The scores and the average are one attention over x
        with each head's rows stacked (as broadcast products and sums they made a training step 2.4x slower
        at H = 16); the weight products are plain matmuls for one head, einsums for several.
        """
        Bn, S, d = x.shape
        H = self.n_heads
        wq, wk, wv = self.w_qkv.split(d, dim=1)
        xr = x[:, rows]
        R = xr.shape[1]
        bias, gate = bias[rows], (None if gate is None else gate[rows])
        if H == 1:  # einsum's permutes and reshapes cost more than these products at this size
            qk = (xr.reshape(Bn * R, d) @ wq @ wk.T).view(Bn, R, d)
            z = _SoftmaxAttention.apply(qk, x, None, bias, scale, gate)[0]
            return (z.view(Bn * R, d) @ wv).view(Bn, R, d)
        wq, wk, wv = (w.view(d, H, d // H) for w in (wq, wk, wv))
        qk = torch.einsum("bhrc,dhc->bhrd", torch.einsum("brd,dhc->bhrc", xr, wq), wk).reshape(Bn, H * R, d)
        z = _SoftmaxAttention.apply(qk, x, None, bias.repeat(H, 1), scale,
                                    None if gate is None else gate.repeat(H, 1))[0]
        return torch.einsum("bhrd,dhc->brhc", z.view(Bn, H, R, d), wv).reshape(Bn, R, d)

    def _all_rows(self, x: torch.Tensor, bias: torch.Tensor, proj: torch.Tensor | None,
                  gate: torch.Tensor | None, scale: float) -> torch.Tensor:
        """Output [B, S, d] of every row (every layer but the last in training)."""
        Bn, S, d = x.shape
        H = self.n_heads
        q, k, v = (x @ self.w_qkv if proj is None else proj).split(d, -1)
        if H > 1:  # heads into the batch: [B, S, H * dh] -> [B * H, S, dh], and back after
            q, k, v = (t.view(Bn, S, H, d // H).transpose(1, 2).reshape(Bn * H, S, d // H) for t in (q, k, v))
        out = _SoftmaxAttention.apply(q, k, v, bias, scale, gate)[0]
        return out if H == 1 else out.view(Bn, H, S, d // H).transpose(1, 2).reshape(Bn, S, d)


class Block(nn.Module):
    """An attention layer (default) or a standard pre-LayerNorm transformer block (App. L)."""

    def __init__(self, cfg: Config, g: torch.Generator):
        super().__init__()
        d = cfg.d_model
        self.standard = cfg.block == "standard"
        self.attn = Attention(d, cfg.n_heads, w_o=cfg.w_o or self.standard, scaled=self.standard, g=g)
        if self.standard:
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.w_in, self.b_in = _normal((d, 4 * d), d**-0.5, g), nn.Parameter(torch.zeros(4 * d))
            self.w_out, self.b_out = _normal((4 * d, d), (4 * d) ** -0.5, g), nn.Parameter(torch.zeros(d))

    def forward(self, h: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | slice | None, need_weights: bool,
                proj: torch.Tensor | None = None,
                gate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, att = self.attn(self.ln1(h) if self.standard else h, bias, rows, need_weights, proj, gate)
        h = (h if rows is None else h[:, rows]) + out
        if self.standard:
            h = h + F.gelu(self.ln2(h) @ self.w_in + self.b_in) @ self.w_out + self.b_out
        return h, att


class Model(nn.Module):
    """The ICML network. `forward(batch)` returns logits [B, R, L] at the readout positions."""

    def __init__(self, cfg: Config, seed: int | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seeds()["init"] if seed is None else seed)
        d, L, hid = cfg.d_model, cfg.num_labels, cfg.mlp_hidden
        self.label_emb = _normal((L, d), d**-0.5, g)
        self.blocks = nn.ModuleList(Block(cfg, g) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d) if cfg.block == "standard" else None
        self.w1, self.b1 = _linear(d, hid, cfg.classifier_init, g)
        self.w2, self.b2 = _linear(hid, L, cfg.classifier_init, g)
        allowed = torch.stack([mask_matrix(m, cfg.num_seq) for m in cfg.layer_masks()])
        self.register_buffer("bias", torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf")), persistent=False)
        self.register_buffer("rows", readout_positions(cfg), persistent=False)
        self.register_buffer("gate", None, persistent=False)  # [layers, S, S] post-softmax factors (surgery)
        # blocked order (see forward): blocked position j is sequence position order[j]. The readout positions are
        # items, 2k in sequence order and k in blocked order: a run of blocked positions, kept as a slice.
        S = cfg.seq_len
        self.register_buffer("order", torch.cat([torch.arange(0, S, 2), torch.arange(1, S, 2)]), persistent=False)
        self.blocked_rows = slice(int(self.rows[0]) // 2, int(self.rows[-1]) // 2 + 1)
        self.vmapped = False  # set by the ensemble trainer, which calls forward under torch.func.vmap

    def _interleave(self, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Rows [B, N+1, *] of items and [B, N, *] of labels into sequence order x_1, l_1, ..., x_q."""
        N = self.cfg.num_seq
        pairs = torch.stack([items[:, :N], labels], dim=2).flatten(1, 2)
        return torch.cat([pairs, items[:, N:]], dim=1)

    def embed(self, batch: Batch) -> torch.Tensor:
        """Item token = [x ; one-hot(pair index, P)]; label token = a learned d_model vector, no position."""
        items = torch.cat([batch.items, F.one_hot(batch.positions, self.cfg.pos_dim).to(batch.items.dtype)], dim=-1)
        return self._interleave(items, self.label_emb[batch.labels])

    def embed_proj(self, batch: Batch, w: torch.Tensor) -> torch.Tensor:
        """embed(batch) @ w without the dense product: the one-hot half of an item token selects a
        row of w and every label token is one of L rows, so only the D content dims are multiplied."""
        D = self.cfg.content_dim
        items = batch.items @ w[:D] + w[D:][batch.positions]
        return self._interleave(items, (self.label_emb @ w)[batch.labels])

    def embed_blocked(self, batch: Batch) -> torch.Tensor:
        """embed(batch) in blocked order (see forward): the N+1 item tokens, then the N label tokens. The item
        tokens are written into one zeroed tensor, with no one-hot tensor built (unless vmapped)."""
        x = batch.items
        D = x.shape[-1]
        if self.vmapped:  # torch.func.vmap has no batching rule for scatter_ (it would loop over the members)
            one_hot = batch.positions[..., None] == torch.arange(self.cfg.pos_dim, device=x.device)
            items = torch.cat([x, one_hot.to(x.dtype)], dim=-1)
        else:
            items = x.new_zeros(*x.shape[:2], self.cfg.d_model)
            items[..., :D] = x
            items[..., D:].scatter_(-1, batch.positions[..., None], 1.0)
        return torch.cat([items, F.embedding(batch.labels, self.label_emb)], dim=1)

    def embed_proj_blocked(self, batch: Batch, w: torch.Tensor) -> torch.Tensor:
        """embed_blocked(batch) @ w, computed as embed_proj does; the matmul adds the rows selected by the
        positions (addmm), and the two halves are one concatenation."""
        D = self.cfg.content_dim
        x = batch.items
        items = torch.addmm(F.embedding(batch.positions, w[D:]).flatten(0, 1), x.flatten(0, 1), w[:D])
        labels = F.embedding(batch.labels, self.label_emb @ w)
        return torch.cat([items.view(*x.shape[:2], -1), labels], dim=1)

    def forward(self, batch: Batch, full: bool = False, return_attn: bool = False):
        """Logits [B, R, L] at the R readout positions.

        full=True computes every row of every layer (for the probes; same logits). With return_attn,
        also a list of per-layer attention weights [B, H, rows, S], rows being the computed ones.
        Without either, and with no Patch set (training, evaluation), the sequence is in blocked order: the N+1
        items then the N labels, masks and gates permuted by `order` to match and the readout rows the slice
        `blocked_rows`. Same function to float rounding, with no interleaving (stack and cat) and no rows read by
        index; with `_SoftmaxAttention`, a training step ~1.3x faster on one CPU thread (`icl-meta bench`).
        """
        blocked = not (full or return_attn) and all(b.attn.patch is None for b in self.blocks)
        if blocked:
            h, readout = self.embed_blocked(batch), self.blocked_rows
            bias = self.bias[:, self.order[:, None], self.order]
            gates = None if self.gate is None else self.gate[:, self.order[:, None], self.order]
        else:
            h, readout, bias, gates = self.embed(batch), self.rows, self.bias, self.gate
        attns = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            rows = None if full or i < last else readout
            proj = None
            if i == 0 and rows is None and not block.standard:
                proj = (self.embed_proj_blocked if blocked else self.embed_proj)(batch, block.attn.w_qkv)
            h, att = block(h, bias[i], rows, return_attn, proj, None if gates is None else gates[i])
            attns.append(att)
        if full:
            h = h[:, self.rows]
        if self.ln_f is not None:
            h = self.ln_f(h)
        u = torch.relu(torch.addmm(self.b1, h.reshape(-1, h.shape[-1]), self.w1))
        logits = torch.addmm(self.b2, u, self.w2).view(*h.shape[:-1], -1)
        return (logits, attns) if return_attn else logits


def loss_and_correct(model: Model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the readout positions, and a bool [B] of correct query predictions."""
    return readout_loss(model.cfg.readout, model(batch), batch)


def readout_loss(readout: str, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """loss_and_correct from the logits [B, R, L] of a model whose readout is `readout`."""
    if readout == "all_labels":
        targets = torch.cat([batch.labels, batch.target[:, None]], dim=1)
    else:
        targets = batch.target[:, None]
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    correct = logits[:, -1].argmax(-1) == batch.target
    return loss, correct
