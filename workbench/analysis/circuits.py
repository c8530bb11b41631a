"""Attribution graphs of a transcoder replacement model (Dunefsky et al. 2024), as circuit-tracer builds them.

Every MLP is replaced by its transcoder plus the transcoder's error. With the attention patterns and LayerNorm
scales frozen at their values on the prompt (as the paper and circuit-tracer do), everything from the *sources*
(token embeddings, feature activations, error terms) to any feature's pre-activation or to a logit direction is
affine. So, for a target ``t`` and a source ``s``:

- the **attribution** ``A[t, s] = s * dt/ds`` equals exactly what removing ``s`` changes in ``t`` while everything
  else stays frozen (a *direct effect*: later features do not react; circuit-tracer's convention). For a feature ``i``
  it is ``z_i(x) * (W_dec[i] . v)``: an input-dependent factor (the activation) times the decoder row read along
  ``v``, the target's read vector carried back through the frozen LayerNorms and attention (the paper's
  input-invariant factor when source and target share a position and no attention lies between them);
- the constant part (every bias) is one more node, so the attributions into a node **add up to its pre-activation**.

Heads are not nodes: an attention head's output is a vector that each later node reads along its own direction,
so its attribution depends on who reads it and would break that sum. Instead :func:`edge_routes` splits one edge by
the first head it passes through (the parts add up to the edge), and a graph's ``head_attribution`` holds, for each
target, every attention message's attribution: attention weight times the rest (OV circuit, LayerNorm scale, and
the downstream read), which is what removing that one message changes.

:func:`attribute` builds a :class:`Graph`; :func:`prune` keeps the nodes and edges that carry most of the influence
on the targets (circuit-tracer's thresholds); :func:`greedy_paths` follows the strongest edges back from a target
(the official code's greedy path search). Graphs save as safetensors + JSON, never pickle.
"""

from __future__ import annotations

import contextlib
import enum
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench import hooks, interventions


class NodeKind(enum.IntEnum):
    """What a graph node stands for."""

    FEATURE = 0
    ERROR = 1
    EMBEDDING = 2
    BIAS = 3
    TARGET = 4


# --- the replacement model's weights ---


@dataclass(frozen=True)
class ReplacementWeights:
    """The weights attribution reads: the model's (embeddings, LayerNorms, attention OV, unembedding) and one
    transcoder per MLP layer, stacked over layers."""

    W_E: Float[Tensor, "d_vocab d_model"]
    W_pos: Float[Tensor, "n_ctx d_model"]
    ln1_w: Float[Tensor, "layer d_model"]
    ln1_b: Float[Tensor, "layer d_model"]
    ln2_w: Float[Tensor, "layer d_model"]
    ln2_b: Float[Tensor, "layer d_model"]
    lnf_w: Float[Tensor, " d_model"]
    lnf_b: Float[Tensor, " d_model"]
    W_V: Float[Tensor, "layer head d_model d_head"]
    b_V: Float[Tensor, "layer head d_head"]
    W_O: Float[Tensor, "layer head d_head d_model"]
    b_O: Float[Tensor, "layer d_model"]
    W_U: Float[Tensor, "d_model d_vocab"]
    b_U: Float[Tensor, " d_vocab"]
    W_enc: Float[Tensor, "layer d_model d_sae"]
    b_enc: Float[Tensor, "layer d_sae"]
    W_dec: Float[Tensor, "layer d_sae d_model"]
    b_dec: Float[Tensor, "layer d_model"]

    @property
    def n_layers(self) -> int:
        return self.W_V.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_V.shape[1]

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: torch.nn.Module, transcoders: Sequence[torch.nn.Module]) -> ReplacementWeights:
        """Read the weights of a GPT-2-style ``TransformerBridge`` (LayerNorm before attention and MLP, absolute
        positions, no LayerNorm folding) and of ``transcoders``, one per MLP layer in layer order (checked)."""
        check_transcoders(model, transcoders)

        def ln(module) -> tuple[Tensor, Tensor]:
            inner = getattr(module, "original_component", module)
            return inner.weight.detach().float(), inner.bias.detach().float()

        lns = [(ln(b.ln1), ln(b.ln2)) for b in model.blocks]
        lnf_w, lnf_b = ln(model.ln_final)
        f = lambda t: t.detach().float().cpu()  # noqa: E731
        pos_embed = getattr(model.pos_embed, "original_component", model.pos_embed)
        return cls(
            W_E=f(model.W_E), W_pos=f(getattr(pos_embed, "weight", None) if hasattr(pos_embed, "weight") else
                                      model.pos_embed.W_pos),
            ln1_w=torch.stack([f(a[0]) for a, _ in lns]), ln1_b=torch.stack([f(a[1]) for a, _ in lns]),
            ln2_w=torch.stack([f(b[0]) for _, b in lns]), ln2_b=torch.stack([f(b[1]) for _, b in lns]),
            lnf_w=f(lnf_w), lnf_b=f(lnf_b),
            W_V=f(model.W_V), b_V=f(model.b_V), W_O=f(model.W_O), b_O=f(model.b_O),
            W_U=f(model.W_U), b_U=f(model.b_U),
            W_enc=torch.stack([f(t.W_enc) for t in transcoders]), b_enc=torch.stack([f(t.b_enc) for t in transcoders]),
            W_dec=torch.stack([f(t.W_dec) for t in transcoders]), b_dec=torch.stack([f(t.b_dec) for t in transcoders]))

    def read_vector(self, layer: int, feature: int) -> Float[Tensor, " d_model"]:
        """What a feature's encoder reads, through its LayerNorm's weight: the ``v`` of ``W_dec[i] . v`` for a source
        at the same position with no attention in between (divided by the LayerNorm scale on a given input)."""
        u = self.ln2_w[layer] * self.W_enc[layer][:, feature]
        return u - u.mean()


def check_transcoders(model: torch.nn.Module, transcoders: Sequence[torch.nn.Module]) -> None:
    """Raise a ``ValueError`` that says what to fix unless ``transcoders`` holds one ReLU transcoder per MLP layer of
    ``model``, in layer order, each reading ``blocks.{l}.mlp.hook_in`` and writing ``blocks.{l}.hook_mlp_out`` at the
    model's width, all of one width ``d_sae``."""
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    if len(transcoders) != n_layers:
        raise ValueError(f"got {len(transcoders)} transcoders for a model with {n_layers} MLP layers: pass one per "
                         "layer, in layer order (workbench.analysis.transcoders.load_transcoders does)")
    for layer, tc in enumerate(transcoders):
        reads, writes = tc.W_enc.shape[0], tc.W_dec.shape[1]
        if (reads, writes) != (d_model, d_model):
            raise ValueError(f"transcoder {layer} maps width {reads} -> {writes}, but the model's MLPs map "
                             f"{d_model} -> {d_model}: it belongs to another model")
        meta = getattr(getattr(tc, "cfg", None), "metadata", None)
        hook_in = getattr(meta, "hook_name", None)
        hook_out = getattr(meta, "hook_name_out", None) or hook_in
        if hook_in and (hook_in, hook_out) != (hooks.mlp_in(layer), hooks.mlp_out(layer)):
            raise ValueError(f"transcoder {layer} in the list was trained on {hook_in} -> {hook_out}, not on layer "
                             f"{layer}'s MLP ({hooks.mlp_in(layer)} -> {hooks.mlp_out(layer)}): pass the transcoders "
                             "in layer order, one per layer")
        if getattr(getattr(tc, "cfg", None), "apply_b_dec_to_input", False):
            raise ValueError(f"transcoder {layer} subtracts b_dec from its input: fold it first "
                             "(b_enc -= b_dec @ W_enc), as for the official transcoders")
    widths = {tc.W_enc.shape[1] for tc in transcoders}
    if len(widths) != 1:
        raise ValueError(f"the transcoders have different widths d_sae {sorted(widths)}; train them at one width")
    probe = torch.randn(3, d_model, generator=torch.Generator().manual_seed(0))
    for layer, tc in enumerate(transcoders):
        p = tc.W_enc
        with torch.no_grad():
            ours = torch.relu(probe.to(p.device, p.dtype) @ tc.W_enc + tc.b_enc)
            theirs = tc.encode(probe.to(p.device, p.dtype))
        if not torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4):
            raise ValueError(f"transcoder {layer} does not encode as ReLU(x @ W_enc + b_enc) (an architecture with a "
                             "threshold, TopK or input normalisation?): attribution here supports ReLU transcoders")


# --- a prompt's run, frozen ---


@dataclass
class FrozenRun:
    """One prompt's clean run with what attribution freezes: LayerNorm scales, attention patterns, and the
    transcoders' feature activations and errors (``mlp_out - transcoder(mlp_in)``) at every layer."""

    tokens: Int[Tensor, " pos"]
    embed: Float[Tensor, "pos d_model"]
    """Token plus position embedding: the residual stream before layer 0."""
    ln1_scale: Float[Tensor, "layer pos"]
    ln2_scale: Float[Tensor, "layer pos"]
    lnf_scale: Float[Tensor, " pos"]
    pattern: Float[Tensor, "layer head pos pos"]
    """Attention weights ``[layer, head, query (dst), key (src)]``."""
    codes: Float[Tensor, "layer pos d_sae"]
    errors: Float[Tensor, "layer pos d_model"]
    logits: Float[Tensor, "pos d_vocab"]
    """The clean model's logits."""


def _ln_hooks(layer: int | None) -> tuple[str, ...]:
    if layer is None:
        return ("ln_final.hook_scale",)
    return (f"blocks.{layer}.ln1.hook_scale", f"blocks.{layer}.ln2.hook_scale")


@torch.no_grad()
def freeze(model: torch.nn.Module, weights: ReplacementWeights, tokens: Int[Tensor, "batch pos"],
           check_tolerance: float = 1e-3) -> list[FrozenRun]:
    """Run ``tokens`` through ``model`` once and keep, per prompt, what attribution holds fixed. Prompts must not be
    padded (every position is attributed). Checks that the frozen replacement model (every source at its value)
    reproduces the model's logits to ``check_tolerance``, which also catches a model this code does not describe."""
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    L = weights.n_layers
    names = [n for layer in range(L) for n in (*_ln_hooks(layer), hooks.attn_pattern(layer), hooks.mlp_in(layer),
                                                hooks.mlp_out(layer))] + list(_ln_hooks(None))
    for name in names:
        hooks.check_hook_name(model, name)
    device = next(model.parameters()).device
    logits, cache = model.run_with_cache(tokens.to(device), names_filter=names)
    c = {k: v.detach().float().cpu() for k, v in cache.items()}
    toks = tokens.cpu()
    mlp_in = torch.stack([c[hooks.mlp_in(layer)] for layer in range(L)], 1)  # [batch layer pos d]
    codes = torch.relu(torch.einsum("blpd,lds->blps", mlp_in, weights.W_enc) + weights.b_enc[None, :, None])
    recon = torch.einsum("blps,lsd->blpd", codes, weights.W_dec) + weights.b_dec[None, :, None]
    errors = torch.stack([c[hooks.mlp_out(layer)] for layer in range(L)], 1) - recon
    embed = weights.W_E[toks] + weights.W_pos[: toks.shape[1]][None]
    runs = [FrozenRun(
        tokens=toks[b], embed=embed[b],
        ln1_scale=torch.stack([c[f"blocks.{layer}.ln1.hook_scale"][b, :, 0] for layer in range(L)]),
        ln2_scale=torch.stack([c[f"blocks.{layer}.ln2.hook_scale"][b, :, 0] for layer in range(L)]),
        lnf_scale=c["ln_final.hook_scale"][b, :, 0],
        pattern=torch.stack([c[hooks.attn_pattern(layer)][b] for layer in range(L)]),
        codes=codes[b], errors=errors[b], logits=logits[b].detach().float().cpu()) for b in range(len(toks))]
    for b, run in enumerate(runs):
        gap = (frozen_logits(weights, run) - run.logits).abs().max().item()
        if gap > check_tolerance * max(1.0, run.logits.abs().max().item()):
            raise ValueError(f"the frozen replacement model misses the model's logits by {gap:.3g} on prompt {b}: this "
                             "model is not a GPT-2-style bridge without LayerNorm folding (enable_compatibility_mode "
                             "folds it), or the transcoders are not the ones frozen here")
    return runs


# --- the frozen forward pass ---


class _Active(NamedTuple):
    """A prompt's active features: ``index[k] = (layer, pos, feature)`` in that order, ``value[k]`` their activations."""

    index: Int[Tensor, "n 3"]
    value: Float[Tensor, " n"]


def _active(run: FrozenRun) -> _Active:
    index = run.codes.nonzero()
    return _Active(index, run.codes[index[:, 0], index[:, 1], index[:, 2]])


class _Reads(NamedTuple):
    """Targets read at one boundary: ``target = LN(resid)[pos] . vector + constant``, the residual stream taken
    before MLP ``boundary`` (through its LayerNorm) or, when ``boundary == n_layers``, after the last layer (through
    the final LayerNorm)."""

    boundary: int
    pos: Int[Tensor, " row"]
    vector: Float[Tensor, "row d_model"]
    constant: Float[Tensor, " row"]


def _layer_norm(x: Tensor, scale: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return (x - x.mean(-1, keepdim=True)) / scale[..., None] * w + b


def _residual(w: ReplacementWeights, run: FrozenRun, active: _Active, embed: Tensor, acts: Tensor, errors: Tensor,
              pattern: Tensor, boundary: int, keep_z: dict[int, Tensor] | None = None) -> Tensor:
    """``[row pos d_model]`` residual stream of the frozen replacement model at ``boundary`` (see :class:`_Reads`),
    from per-row sources ``embed [row pos d]``, ``acts [row n_active]``, ``errors [row layer pos d]`` and attention
    weights ``pattern`` (``[layer head pos pos]``, or ``[row layer head pos pos]`` to attribute to its entries).
    With ``keep_z``, each layer's head outputs before ``W_O`` are kept there with their gradients retained."""
    resid, n_pos = embed, embed.shape[1]
    for layer in range(min(boundary + 1, w.n_layers)):
        x1 = _layer_norm(resid, run.ln1_scale[layer], w.ln1_w[layer], w.ln1_b[layer])
        v = torch.einsum("rpd,hde->rphe", x1, w.W_V[layer]) + w.b_V[layer]
        if pattern.dim() == 4:
            z = torch.einsum("hqk,rkhe->rqhe", pattern[layer], v)
        else:
            z = torch.einsum("rhqk,rkhe->rqhe", pattern[:, layer], v)
        if keep_z is not None:
            z.retain_grad()
            keep_z[layer] = z
        resid = resid + torch.einsum("rqhe,hed->rqd", z, w.W_O[layer]) + w.b_O[layer]
        if layer == boundary:
            break
        sel = active.index[:, 0] == layer
        onehot = torch.nn.functional.one_hot(active.index[sel, 1], n_pos).T.to(resid.dtype)  # [pos n_layer]
        decoded = (acts[:, None, sel] * onehot) @ w.W_dec[layer][active.index[sel, 2]]
        resid = resid + decoded + w.b_dec[layer] + errors[:, layer]
    return resid


def _normalised(w: ReplacementWeights, run: FrozenRun, resid: Tensor, boundary: int) -> Tensor:
    if boundary == w.n_layers:
        return _layer_norm(resid, run.lnf_scale, w.lnf_w, w.lnf_b)
    return _layer_norm(resid, run.ln2_scale[boundary], w.ln2_w[boundary], w.ln2_b[boundary])


def _read(w: ReplacementWeights, run: FrozenRun, active: _Active, reads: _Reads, embed: Tensor, acts: Tensor,
          errors: Tensor, pattern: Tensor, keep_z: dict[int, Tensor] | None = None) -> Tensor:
    """``[row]`` target values of the frozen replacement model (see :func:`_residual` for the sources)."""
    resid = _residual(w, run, active, embed, acts, errors, pattern, reads.boundary, keep_z)
    x = _normalised(w, run, resid, reads.boundary)
    return (x[torch.arange(len(reads.pos)), reads.pos] * reads.vector).sum(-1) + reads.constant


@torch.no_grad()
def frozen_logits(weights: ReplacementWeights, run: FrozenRun) -> Float[Tensor, "pos d_vocab"]:
    """Logits of the frozen replacement model with every source at its value: the model's own logits (``freeze``
    checks it)."""
    active = _active(run)
    resid = _residual(weights, run, active, run.embed[None], active.value[None], run.errors[None], run.pattern,
                      weights.n_layers)
    return _normalised(weights, run, resid, weights.n_layers)[0] @ weights.W_U + weights.b_U


# --- targets ---


@dataclass(frozen=True)
class Target:
    """What a graph explains: a direction in the logits at a position, ``logits[pos] . direction`` (e.g. the later
    years' mean logit minus the earlier years'), or a feature's pre-activation at a position."""

    description: str
    pos: int
    direction: Float[Tensor, " d_vocab"] | None = None
    """For a logit target: weights over the vocabulary."""
    feature: tuple[int, int] | None = None
    """For a feature target: ``(layer, index)``."""

    def __post_init__(self) -> None:
        if (self.direction is None) == (self.feature is None):
            raise ValueError(f"target {self.description!r} needs exactly one of direction (a logit target) or feature "
                             f"(layer, index), got direction={self.direction is not None}, feature={self.feature}")

    @classmethod
    def logit(cls, direction: Float[Tensor, " d_vocab"], pos: int, description: str = "logit direction") -> Target:
        return cls(description, pos, direction=direction.detach().float().cpu())

    @classmethod
    def of_feature(cls, layer: int, index: int, pos: int) -> Target:
        return cls(f"L{layer} #{index} @{pos}", pos, feature=(layer, index))

    def read(self, weights: ReplacementWeights) -> tuple[int, Tensor, Tensor]:
        """``(boundary, vector, constant)``: the target is ``LN(resid)[pos] . vector + constant`` (see ``_Reads``)."""
        if self.feature is not None:
            layer, index = self.feature
            return layer, weights.W_enc[layer][:, index], weights.b_enc[layer][index]
        return weights.n_layers, weights.W_U @ self.direction, self.direction @ weights.b_U


def greater_than_direction(year_ids: Sequence[int], yy: int, d_vocab: int) -> Float[Tensor, " d_vocab"]:
    """Weights over the vocabulary: ``+1/n`` on the ``n`` two-digit years after ``yy``, ``-1/m`` on the ``m`` years
    up to it. Dotted with the logits: the later years' mean logit minus the earlier years' (a linear stand-in for
    Hanna et al.'s probability difference, which rises with it)."""
    if len(year_ids) != 100 or not 0 <= yy <= 98:
        raise ValueError(f"need the 100 year tokens 00..99 and a start year in 0..98, got {len(year_ids)} ids, yy={yy}")
    direction = torch.zeros(d_vocab)
    ids = torch.as_tensor(list(year_ids))
    direction[ids[yy + 1:]] = 1.0 / (99 - yy)
    direction[ids[:yy + 1]] = -1.0 / (yy + 1)
    return direction


# --- attribution ---


def _rows(w: ReplacementWeights, run: FrozenRun, active: _Active, reads: _Reads, heads: bool = False
          ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Attribution rows ``[row, source]`` (sources in graph order: features, errors, embeddings, bias), the rows'
    values, and with ``heads`` every attention message's attribution ``[row layer head pos pos]``."""
    R = len(reads.pos)
    embed = run.embed.expand(R, -1, -1).clone().requires_grad_(True)
    acts = active.value.expand(R, -1).clone().requires_grad_(True)
    errors = run.errors.expand(R, -1, -1, -1).clone().requires_grad_(True)
    pattern = run.pattern.expand(R, -1, -1, -1, -1).clone().requires_grad_(True) if heads else run.pattern
    leaves = [embed, acts, errors] + ([pattern] if heads else [])
    with torch.enable_grad():
        values = _read(w, run, active, reads, embed, acts, errors, pattern)
        grads = torch.autograd.grad(values.sum(), leaves, allow_unused=True)
    g_embed, g_acts, g_errors = (torch.zeros_like(t) if g is None else g for g, t in zip(grads[:3], leaves[:3],
                                                                                         strict=True))
    with torch.no_grad():  # every source at zero: what the biases alone give
        bias = _read(w, run, active, reads, torch.zeros_like(run.embed).expand(R, -1, -1),
                     torch.zeros_like(active.value).expand(R, -1), torch.zeros_like(run.errors).expand(R, -1, -1, -1),
                     run.pattern)
    rows = torch.cat([(acts * g_acts).detach(), (errors * g_errors).sum(-1).reshape(R, -1).detach(),
                      (embed * g_embed).sum(-1).detach(), bias[:, None]], 1)
    head_rows = None
    if heads:
        g_pattern = torch.zeros_like(pattern) if grads[3] is None else grads[3]
        head_rows = (pattern * g_pattern).detach()
    return rows, values.detach(), head_rows


def _reads_of(weights: ReplacementWeights, targets: Sequence[Target]) -> dict[int, tuple[list[int], _Reads]]:
    """Targets grouped by boundary: ``{boundary: (their indices, their reads)}``."""
    groups: dict[int, list[tuple[int, Tensor, Tensor]]] = {}
    for i, t in enumerate(targets):
        boundary, vector, constant = t.read(weights)
        groups.setdefault(boundary, []).append((i, vector, constant))
    return {b: ([i for i, _, _ in g], _Reads(b, torch.tensor([targets[i].pos for i, _, _ in g]),
                                             torch.stack([v for _, v, _ in g]), torch.stack([c for _, _, c in g])))
            for b, g in groups.items()}


@torch.no_grad()
def attribute(weights: ReplacementWeights, run: FrozenRun, targets: Sequence[Target],
              max_feature_rows: int | None = None, batch_size: int = 64, token_strings: Sequence[str] = (),
              metadata: dict | None = None) -> Graph:
    """The attribution graph of ``run`` for ``targets``: the targets' rows, and the rows of the active features
    (all of them, or the ``max_feature_rows`` with the most influence on the targets, chosen a batch at a time as
    circuit-tracer does; a feature without a row is a leaf). ``batch_size`` rows share one backward pass."""
    if not targets:
        raise ValueError("attribute needs at least one Target (Target.logit(...) or Target.of_feature(...))")
    n_pos = len(run.tokens)
    for t in targets:
        if not 0 <= t.pos < n_pos:
            raise ValueError(f"target {t.description!r} is at position {t.pos}, but the prompt has {n_pos} positions")
    active = _active(run)
    L, H, n_f = weights.n_layers, weights.n_heads, len(active.value)
    n_src = n_f + L * n_pos + n_pos + 1
    n = n_src + len(targets)
    adjacency = torch.zeros(n, n)
    computed = torch.zeros(n, dtype=torch.bool)
    activations = torch.ones(n)
    activations[:n_f] = active.value
    head_attribution = torch.zeros(len(targets), L, H, n_pos, n_pos)
    for _, (idx, reads) in _reads_of(weights, targets).items():
        for start in range(0, len(idx), batch_size):
            chunk = _Reads(reads.boundary, *(t[start:start + batch_size] for t in reads[1:]))
            rows, values, heads = _rows(weights, run, active, chunk, heads=True)
            nodes = [n_src + i for i in idx[start:start + batch_size]]
            adjacency[nodes, :n_src] = rows
            activations[nodes] = values
            head_attribution[[i for i in idx[start:start + batch_size]]] = heads
            computed[nodes] = True
    feature_targets = [Target.of_feature(int(a), int(c), int(b)) for a, b, c in active.index.tolist()]
    limit = n_f if max_feature_rows is None else min(max_feature_rows, n_f)
    graph = Graph(run.tokens.clone(), active.index.clone(), adjacency, activations, computed, head_attribution, L,
                  [t.description for t in targets], [t.pos for t in targets], list(token_strings), dict(metadata or {}))
    done = 0
    while done < limit:
        if max_feature_rows is None:
            pick = torch.arange(done, min(done + batch_size, n_f))
        else:  # the features with the most influence on the targets so far, among those without a row
            influence = node_influence(graph)[:n_f]
            influence[computed[:n_f]] = -1
            pick = influence.topk(min(batch_size, limit - done)).indices
            pick = pick[influence[pick] > 0]
            if len(pick) == 0:
                break
        for idx, reads in _reads_of(weights, [feature_targets[i] for i in pick.tolist()]).values():
            rows, _, _ = _rows(weights, run, active, reads)
            nodes = pick[idx]
            adjacency[nodes, :n_src] = rows
            computed[nodes] = True
        done += len(pick)
    return graph


# --- the graph ---


@dataclass
class Graph:
    """An attribution graph: nodes in the order ``[features | errors (layer, pos) | embeddings (pos) | bias |
    targets]``, and ``adjacency[target, source]``, the direct effect of each source on each node whose row was
    computed (``computed``); for those rows, the attributions (bias included) add up to the node's value."""

    tokens: Int[Tensor, " pos"]
    features: Int[Tensor, "feature 3"]
    """``(layer, pos, index)`` of each active feature: the first nodes."""
    adjacency: Float[Tensor, "node node"]
    activations: Float[Tensor, " node"]
    """The input-dependent factor of each node's outgoing edges: a feature's activation ``z_i(x)``; 1 for errors,
    embeddings and the bias (their edges are all weight). For a target, its value."""
    computed: Bool[Tensor, " node"]
    """Whether the node's row (its incoming edges) was computed."""
    head_attribution: Float[Tensor, "target layer head pos pos"]
    """Per target, each attention message's attribution ``[layer, head, dst, src]``: attention weight times the
    rest, i.e. what removing that one message changes in the target (all else frozen)."""
    n_layers: int
    targets: list[str]
    """Each target's description."""
    target_pos: list[int]
    """Each target's position."""
    token_strings: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_nodes(self) -> int:
        return self.adjacency.shape[0]

    def error_node(self, layer: int, pos: int) -> int:
        return self.n_features + layer * self.n_pos + pos

    def embedding_node(self, pos: int) -> int:
        return self.n_features + self.n_layers * self.n_pos + pos

    @property
    def bias_node(self) -> int:
        return self.n_features + (self.n_layers + 1) * self.n_pos

    def target_node(self, k: int = 0) -> int:
        return self.bias_node + 1 + k

    def feature_node(self, layer: int, pos: int, index: int) -> int:
        """The node of feature ``index`` of layer ``layer`` at ``pos``; raises when it is not active there."""
        hit = ((self.features == torch.tensor([layer, pos, index])).all(-1)).nonzero()
        if len(hit) == 0:
            raise KeyError(f"feature {index} of layer {layer} is not active at position {pos} of this prompt")
        return int(hit[0, 0])

    def kind(self, node: int) -> NodeKind:
        if node < self.n_features:
            return NodeKind.FEATURE
        if node < self.embedding_node(0):
            return NodeKind.ERROR
        if node < self.bias_node:
            return NodeKind.EMBEDDING
        return NodeKind.BIAS if node == self.bias_node else NodeKind.TARGET

    def layer_pos(self, node: int) -> tuple[float, int]:
        """Where a node sits for drawing: ``(layer, position)``; embeddings at layer -1, the bias at -1 and position
        -1, targets one layer above the last."""
        kind = self.kind(node)
        if kind == NodeKind.FEATURE:
            return int(self.features[node, 0]), int(self.features[node, 1])
        if kind == NodeKind.ERROR:
            return divmod(node - self.n_features, self.n_pos)
        if kind == NodeKind.EMBEDDING:
            return -1, node - self.embedding_node(0)
        if kind == NodeKind.BIAS:
            return -1, -1
        return self.n_layers, self.target_pos[node - self.target_node(0)]

    def label(self, node: int) -> str:
        """A short name: ``L3 #120 @8 '35'``, ``err L2 @8``, ``emb @8 '35'``, ``bias``, or the target's description."""
        kind = self.kind(node)
        tok = (lambda p: f" {self.token_strings[p]!r}" if self.token_strings else "")  # noqa: E731
        if kind == NodeKind.FEATURE:
            layer, pos, index = self.features[node].tolist()
            return f"L{layer} #{index} @{pos}{tok(pos)}"
        if kind == NodeKind.ERROR:
            layer, pos = self.layer_pos(node)
            return f"err L{layer} @{pos}"
        if kind == NodeKind.EMBEDDING:
            pos = node - self.embedding_node(0)
            return f"emb @{pos}{tok(pos)}"
        return "bias" if kind == NodeKind.BIAS else self.targets[node - self.target_node(0)]

    def weights(self) -> Float[Tensor, "node node"]:
        """The edges' other factor: ``adjacency / activation of the source`` (for a feature source ``W_dec[i] . v``)."""
        return self.adjacency / self.activations.clamp_min(1e-12)[None, :]

    def top_inputs(self, node: int, k: int = 10) -> list[tuple[int, float, float, float]]:
        """The ``k`` largest incoming edges by size: ``(source, attribution, activation, weight)``."""
        if not self.computed[node]:
            raise ValueError(f"node {self.label(node)} has no computed row (attribute with more max_feature_rows)")
        row = self.adjacency[node]
        top = row.abs().topk(min(k, int((row != 0).sum()))).indices.tolist()
        return [(s, float(row[s]), float(self.activations[s]), float(row[s] / self.activations[s])) for s in top]

    def select_features(self, keep: Bool[Tensor, " feature"]) -> Graph:
        """A smaller graph with only the features ``keep`` marks (every error, embedding, bias and target node stays):
        e.g. the features a pruning kept. A kept row no longer lists the dropped features' edges, so it adds up to its
        value only when nothing it reads was dropped."""
        nodes = torch.cat([keep, torch.ones(self.n_nodes - self.n_features, dtype=torch.bool)])
        return Graph(self.tokens, self.features[keep], self.adjacency[nodes][:, nodes], self.activations[nodes],
                     self.computed[nodes], self.head_attribution, self.n_layers, list(self.targets),
                     list(self.target_pos), list(self.token_strings), dict(self.metadata))

    def save(self, path: str | Path) -> Path:
        """Write ``graph.safetensors`` (tensors; of the adjacency only the computed rows) and ``graph.json`` (the
        rest) into the folder ``path``. Never pickle."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).contiguous() for k in _GRAPH_TENSORS}
        tensors["adjacency"] = self.adjacency[self.computed].contiguous()
        save_file(tensors, str(path / "graph.safetensors"))
        info = {"n_layers": self.n_layers, "targets": self.targets, "target_pos": self.target_pos,
                "token_strings": self.token_strings, "metadata": self.metadata}
        (path / "graph.json").write_text(json.dumps(info, indent=1, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        path = Path(path)
        if not (path / "graph.safetensors").exists() or not (path / "graph.json").exists():
            raise FileNotFoundError(f"no graph at {path}: expected graph.safetensors and graph.json (Graph.save writes "
                                    "them)")
        tensors = load_file(str(path / "graph.safetensors"))
        n = len(tensors["computed"])
        adjacency = torch.zeros(n, n)
        adjacency[tensors["computed"]] = tensors["adjacency"]
        tensors["adjacency"] = adjacency
        info = json.loads((path / "graph.json").read_text())
        return cls(**{k: tensors[k] for k in _GRAPH_TENSORS}, **info)


_GRAPH_TENSORS = ("tokens", "features", "adjacency", "activations", "computed", "head_attribution")


# --- pruning (circuit-tracer's influence thresholds) ---


def _normalised_abs(adjacency: Tensor) -> Tensor:
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp_min(1e-10)


def _influence(rows: Tensor, a: Tensor, weights: Tensor) -> Tensor:
    """``weights @ (A + A^2 + ...)`` for the ``[node node]`` matrix ``A`` whose only non-zero rows are ``a`` (at the
    node indices ``rows``): each step costs ``len(rows) x n``, not ``n^2``. ``A`` is nilpotent (a graph over layers),
    so the series ends."""
    current = weights[rows] @ a
    total = current.clone()
    for _ in range(len(rows) + 1):
        if not current[rows].any():
            return total
        current = current[rows] @ a
        total += current
    raise RuntimeError("influence did not converge: the adjacency has a cycle")


def _target_weights(graph: Graph) -> Tensor:
    w = torch.zeros(graph.n_nodes)
    w[graph.target_node(0):] = 1.0 / len(graph.targets)
    return w


def node_influence(graph: Graph) -> Float[Tensor, " node"]:
    """Each node's influence on the targets: the share of each node's input it makes up (``|A|`` normalised by
    row), compounded over every path to the targets, as circuit-tracer computes it."""
    rows = graph.computed.nonzero()[:, 0]
    return _influence(rows, _normalised_abs(graph.adjacency[rows]), _target_weights(graph))


def _threshold(scores: Tensor, keep: float) -> Tensor:
    ordered = scores.sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp_min(1e-12)
    return ordered[min(int(torch.searchsorted(cumulative, torch.tensor(keep))), len(ordered) - 1)]


class PruneResult(NamedTuple):
    node_mask: Bool[Tensor, " node"]
    edge_mask: Bool[Tensor, "node node"]
    influence: Float[Tensor, " node"]


def pruned(graph: Graph, result: PruneResult) -> tuple[Graph, PruneResult]:
    """The graph with only the features the pruning kept (see :meth:`Graph.select_features`), and the pruning's
    masks and influence on its nodes: small enough to keep one per prompt."""
    keep = result.node_mask[:graph.n_features]
    nodes = torch.cat([keep, torch.ones(graph.n_nodes - graph.n_features, dtype=torch.bool)])
    return graph.select_features(keep), PruneResult(result.node_mask[nodes], result.edge_mask[nodes][:, nodes],
                                                    result.influence[nodes])


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PruneResult:
    """Keep the nodes that carry ``node_threshold`` of the total influence on the targets and then the edges that
    carry ``edge_threshold`` of it (circuit-tracer's ``prune_graph``); embeddings and targets always stay, and a
    feature or error left without an outgoing edge (or a feature without an incoming one) goes."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    influence = node_influence(graph)
    node_mask = influence >= _threshold(influence, node_threshold)
    always = torch.zeros(graph.n_nodes, dtype=torch.bool)
    always[graph.embedding_node(0):graph.bias_node] = True
    always[graph.target_node(0):] = True
    node_mask |= always
    rows = (graph.computed & node_mask).nonzero()[:, 0]  # only computed rows have edges: work on those
    normalised = _normalised_abs(graph.adjacency[rows] * node_mask[None, :])
    weights = _target_weights(graph)
    edge_scores = normalised * (_influence(rows, normalised, weights) + weights)[rows][:, None]
    edge_mask = torch.zeros(graph.n_nodes, graph.n_nodes, dtype=torch.bool)
    edge_mask[rows] = (edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)) & (edge_scores > 0)
    inner = ~always
    inner[graph.bias_node] = True
    features = torch.zeros(graph.n_nodes, dtype=torch.bool)
    features[:graph.n_features] = True
    while True:  # drop nodes left without outgoing edges (features and errors) or incoming ones (features)
        before = node_mask.clone()
        node_mask &= ~(inner & ~edge_mask.any(0))
        node_mask &= ~(features & graph.computed & ~edge_mask.any(1))
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        if torch.equal(before, node_mask):
            return PruneResult(node_mask, edge_mask, influence)


# --- greedy path search (the official code's greedy_get_top_paths) ---


class GraphPath(NamedTuple):
    """A path back from a node: ``nodes[0]`` is where it starts, ``attributions[k]`` the edge ``nodes[k+1] ->
    nodes[k]``."""

    nodes: tuple[int, ...]
    attributions: tuple[float, ...]


def greedy_paths(graph: Graph, start: int, n_iters: int = 3, n_branches: int = 15) -> list[list[GraphPath]]:
    """From ``start`` (a target or a feature with a computed row), extend every path by its last node's
    ``n_branches`` largest positive incoming edges, and keep the ``n_branches`` new paths whose last edge is
    largest; ``n_iters`` times. Returns the kept paths of each iteration (as the official code does); a path ends at
    a node without a row (an embedding, an error, the bias, a feature whose row was not computed)."""
    if not graph.computed[start]:
        raise ValueError(f"node {graph.label(start)} has no computed row: start from a target or a feature attributed")
    current, found = [GraphPath((start,), ())], []
    for _ in range(n_iters):
        extended = []
        for path in current:
            last = path.nodes[-1]
            if not graph.computed[last]:
                continue
            row = graph.adjacency[last]
            top = row.topk(min(n_branches, graph.n_nodes))
            extended += [GraphPath(path.nodes + (s,), path.attributions + (v,))
                         for v, s in zip(top.values.tolist(), top.indices.tolist(), strict=True) if v > 0]
        extended.sort(key=lambda p: -p.attributions[-1])
        current = extended[:n_branches]
        if not current:
            break
        found.append(current)
    return found


def path_string(graph: Graph, path: GraphPath) -> str:
    """``target <- L3 #12 @8 '35' (+1.23) <- ...``"""
    parts = [graph.label(path.nodes[0])]
    parts += [f"{graph.label(n)} ({a:+.3g})" for n, a in zip(path.nodes[1:], path.attributions, strict=True)]
    return " <- ".join(parts)


# --- an edge split by the attention head it first passes through ---


@torch.no_grad()
def edge_routes(weights: ReplacementWeights, run: FrozenRun, graph: Graph, target: int, source: int,
                target_spec: Target | None = None) -> dict[str, float]:
    """Split the edge ``source -> target`` by the first attention head the source's write passes through:
    ``{"residual": part that reaches the target without attention (same position only), "L{l}.H{h}": part whose
    first hop is head h of layer l}``. Every path from the source takes exactly one of these routes, so the parts add
    up to the edge. ``target_spec`` is needed for a target node (its :class:`Target`); a feature's is known."""
    kind = graph.kind(target)
    if kind == NodeKind.FEATURE:
        layer, pos, index = graph.features[target].tolist()
        target_spec = Target.of_feature(layer, index, pos)
    elif kind != NodeKind.TARGET or target_spec is None:
        raise ValueError(f"edge_routes needs a feature node or a target node with its Target, got {graph.label(target)}")
    source_kind = graph.kind(source)
    if source_kind == NodeKind.FEATURE:
        s_layer, s_pos, s_index = graph.features[source].tolist()
        write = graph.activations[source] * weights.W_dec[s_layer][s_index]
    elif source_kind == NodeKind.ERROR:
        s_layer, s_pos = graph.layer_pos(source)
        write = run.errors[s_layer, s_pos]
    elif source_kind == NodeKind.EMBEDDING:
        s_layer, s_pos = -1, source - graph.embedding_node(0)
        write = run.embed[s_pos]
    else:
        raise ValueError(f"edge_routes splits edges from features, errors and embeddings, not {graph.label(source)}")
    boundary, vector, constant = target_spec.read(weights)
    reads = _Reads(boundary, torch.tensor([target_spec.pos]), vector[None], constant[None])
    active = _active(run)
    keep: dict[int, Tensor] = {}
    with torch.enable_grad():
        resid = run.embed[None].clone().requires_grad_(True)
        value = _read(weights, run, active, reads, resid, active.value[None], run.errors[None], run.pattern, keep)
        value.backward()
    routes = {}
    if s_pos == target_spec.pos and s_layer < boundary:
        scale = run.lnf_scale if boundary == weights.n_layers else run.ln2_scale[boundary]
        ln_w = weights.lnf_w if boundary == weights.n_layers else weights.ln2_w[boundary]
        u = ln_w * vector
        routes["residual"] = float(write @ (u - u.mean()) / scale[s_pos])
    else:
        routes["residual"] = 0.0
    centred = write - write.mean()
    for layer, z in keep.items():
        if layer <= s_layer:
            continue
        x1 = centred / run.ln1_scale[layer, s_pos] * weights.ln1_w[layer]
        v = torch.einsum("d,hde->he", x1, weights.W_V[layer])
        parts = torch.einsum("hq,he,qhe->h", run.pattern[layer][:, :, s_pos], v, z.grad[0])
        for head, part in enumerate(parts.tolist()):
            routes[f"L{layer}.H{head}"] = part
    return routes


def input_invariant_connections(weights: ReplacementWeights, up: Sequence[tuple[int, int]],
                                down: Sequence[tuple[int, int]], head: tuple[int, int] | None = None
                                ) -> Float[Tensor, "up down"]:
    """How strongly each upstream feature ``(layer, index)`` writes what each downstream one reads, from the weights
    alone (the paper's input-invariant factor): ``W_dec[i] . v_j``, ``v_j`` the encoder row through its LayerNorm's
    weight, directly through the residual stream (one position), or with ``head = (layer, head)`` through that head's
    OV circuit (from the upstream feature's position to the downstream one's). On a prompt an edge is this times the
    activation, divided by the LayerNorm scales on the way (and times the attention weight through a head). Zero where
    no such path exists (the upstream feature not before the head or the downstream one)."""
    v = torch.stack([weights.read_vector(layer, index) for layer, index in down])
    down_layers = torch.tensor([layer for layer, _ in down])
    out = torch.zeros(len(up), len(down))
    for row, (layer, index) in enumerate(up):
        write = weights.W_dec[layer][index]
        if head is None:
            out[row] = torch.where(down_layers > layer, v @ write, 0.0)
            continue
        h_layer, h = head
        x = (write - write.mean()) * weights.ln1_w[h_layer]
        moved = x @ weights.W_V[h_layer, h] @ weights.W_O[h_layer, h]
        out[row] = torch.where((down_layers >= h_layer) & (h_layer > layer), v @ moved, 0.0)
    return out


# --- the same freezing, in the real model (for checking an edge by intervention) ---


@contextlib.contextmanager
def frozen_model(model: torch.nn.Module, weights: ReplacementWeights, run: FrozenRun,
                 codes: Float[Tensor, "layer pos d_sae"] | None = None,
                 errors: Float[Tensor, "layer pos d_model"] | None = None,
                 pattern: Float[Tensor, "layer head pos pos"] | None = None) -> Iterator[dict[int, Tensor]]:
    """Inside the block, ``model(run.tokens[None])`` runs the replacement model with the LayerNorm scales and (unless
    given) the attention patterns of ``run``, and every MLP output set to ``decode(codes) + errors`` (default: the
    run's): circuit-tracer's direct-effect intervention, through the model's own hook points. Yields a dict that
    holds each layer's ``mlp.hook_in`` of the latest pass (feature pre-activations are read from it)."""
    codes = run.codes if codes is None else codes
    errors = run.errors if errors is None else errors
    pattern = run.pattern if pattern is None else pattern
    seen: dict[int, Tensor] = {}

    def put(value: Tensor):
        return lambda act, hook: value.to(act.device, act.dtype).expand_as(act)

    def record(layer: int):
        def fn(act, hook):
            seen[layer] = act.detach().float().cpu()
        return fn

    fwd = [("ln_final.hook_scale", put(run.lnf_scale[None, :, None]))]
    for layer in range(weights.n_layers):
        ln1, ln2 = _ln_hooks(layer)
        out = codes[layer] @ weights.W_dec[layer] + weights.b_dec[layer] + errors[layer]
        fwd += [(ln1, put(run.ln1_scale[layer][None, :, None])), (ln2, put(run.ln2_scale[layer][None, :, None])),
                (hooks.attn_pattern(layer), put(pattern[layer][None])), (hooks.mlp_in(layer), record(layer)),
                (hooks.mlp_out(layer), put(out[None]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bridge warns that an edited LayerNorm scale changes rounding
        with interventions.hooked(model, fwd):
            yield seen


def path_heads(weights: ReplacementWeights, run: FrozenRun, graph: Graph, path: GraphPath,
               target_spec: Target | None = None) -> list[str]:
    """For each step of ``path``, the head that carries most of it (``"L3.H5"``), or ``""`` when most of it stays at
    one position (or the step starts at the bias). ``target_spec``: the Target of the path's first node when it is a
    target node."""
    heads = []
    for t, s in zip(path.nodes, path.nodes[1:], strict=False):
        if graph.kind(s) == NodeKind.BIAS:
            heads.append("")
            continue
        routes = edge_routes(weights, run, graph, t, s, target_spec=target_spec)
        hops = {k: v for k, v in routes.items() if k != "residual"}
        best = max(hops, key=lambda k: abs(hops[k])) if hops else ""
        heads.append(best if best and abs(hops[best]) > abs(routes["residual"]) else "")
    return heads
