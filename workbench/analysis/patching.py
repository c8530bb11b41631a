"""Activation patching one place at a time: where in the model does a run's answer live?

Patching the whole residual stream at every position reproduces the counterfactual run by construction and
says nothing. Patching ONE position of one layer (``residual_patching``, or what a layer's attention writes:
``attn_out_patching``), or ONE head's output (``head_patching``), from the counterfactual run into the clean one
shows where the information that decides the answer sits: on IOI, the indirect object's own position through the
middle layers, the final position once heads have moved the name there.

Each function runs one batched forward pass per layer: row ``i`` of the batch carries the ``i``-th patch, so the
rows are independent runs (a causal model mixes positions, never batch rows). ``tokens`` may hold several prompts
of one length (e.g. one IOI template); the result is then the mean over prompts. ``metric`` maps logits
``[rows pos d_vocab]`` to one number per row; :func:`ioi_metric` is the IOI logit difference for a batch whose rows
are tiled. ``normalised_effect`` turns metric values into 0 (as the clean run) .. 1 (as the counterfactual run),
``normalised_metric`` the other way round (clean 1, corrupted 0: the IOI convention).

IOI prompts for patching (:func:`ioi_patching_batch`): the clean prompt's answer is the indirect object (IO), the
foil the subject (S); the counterfactual either replaces the IO by a third name and keeps the subject (``"io"``,
Cunningham et al.'s feature-patching set-up) or replaces all three name tokens by three other names (``"abc"``, the
corruption of IOI circuit tutorials, which also removes *which* name is repeated). Names must be single tokens, so
a clean prompt and its counterfactual have the same length and positions align.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench import hooks, interventions
from workbench.prompts import PromptBatch
from workbench.tokenizer import encode_strict

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, " batch"]]
"""Logits in, one number per batch row out (e.g. logit of the answer minus logit of the foil, last position)."""

CORRUPTIONS = ("io", "abc")
"""Counterfactuals :func:`ioi_patching_batch` builds: ``"io"`` (a third name as IO, subject kept) or ``"abc"``
(all three name tokens replaced by three other names)."""


@runtime_checkable
class Activations(Protocol):
    """Activations by hook name: TransformerLens's ``ActivationCache`` (``model.run_with_cache``) or a dict."""

    def __getitem__(self, name: str) -> Tensor: ...


def normalised_effect(patched: Tensor, clean: float | Tensor, counterfactual: float | Tensor) -> Tensor:
    """``(clean - patched) / (clean - counterfactual)``: 0 where a patch leaves the metric at its clean value, 1
    where it moves it all the way to the counterfactual run's (values outside [0, 1] overshoot)."""
    clean, counterfactual = float(clean), float(counterfactual)
    if abs(clean - counterfactual) < 1e-6:
        raise ValueError(f"the clean ({clean:.4g}) and counterfactual ({counterfactual:.4g}) metric values are equal, "
                         "so there is no effect to normalise: does the counterfactual prompt change the answer?")
    return (clean - patched) / (clean - counterfactual)


def normalised_metric(patched: Tensor, clean: float | Tensor, corrupted: float | Tensor) -> Tensor:
    """``(patched - corrupted) / (clean - corrupted)``: the IOI convention, 1 = the clean run's metric, 0 = the
    corrupted run's. ``1 - normalised_effect``."""
    return 1 - normalised_effect(patched, clean, corrupted)


# ---------------------------------------------------------------------------------------------- IOI prompts


def single_token(tokenizer, word: str) -> int:
    """The one token id of ``" " + word``; a word of several tokens raises, naming them (a multi-token answer
    or foil has no single next-token logit to compare)."""
    ids = encode_strict(tokenizer, " " + word.strip())
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(f"{word!r} is {len(ids)} tokens {pieces}, not one: the IOI metric compares the next-token "
                         "logits of single-token names; use names that are one token for this tokenizer")
    return ids[0]


def ioi_patching_batch(prompts: Sequence, tokenizer, corruption: str = "io", names: Sequence[str] = (),
                       seed: int = 0) -> PromptBatch:
    """IOI prompts (``workbench.datasets.IOIPrompt``s) as a right-padded :class:`PromptBatch` with answer = IO,
    foil = S and a position-aligned counterfactual (see :data:`CORRUPTIONS`); labels ``io_pos``, ``s1_pos``,
    ``s2_pos`` give where the names sit. ``"abc"`` draws replacement names from ``names`` with ``seed``."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    if not prompts:
        raise ValueError("ioi_patching_batch needs at least one prompt")
    bos = [tokenizer.bos_token_id]
    rng = random.Random(seed)
    pool = {n: single_token(tokenizer, n) for n in names} if corruption == "abc" else {}
    if corruption == "abc" and len(pool) < 5:
        raise ValueError(f"the 'abc' corruption needs at least 5 single-token names to draw from, got {len(pool)}")
    clean, counter, io_ids, s_ids, where = [], [], [], [], []
    for p in prompts:
        io, s = single_token(tokenizer, p.io), single_token(tokenizer, p.s)
        toks = bos + encode_strict(tokenizer, p.prompt)
        io_at, s_at = [i for i, t in enumerate(toks) if t == io], [i for i, t in enumerate(toks) if t == s]
        if len(io_at) != 1 or len(s_at) != 2:
            raise ValueError(f"an IOI prompt names the IO once and the subject twice; {p.prompt!r} has IO {p.io!r} "
                             f"{len(io_at)} time(s) and S {p.s!r} {len(s_at)} time(s)")
        if corruption == "io":
            cf = bos + encode_strict(tokenizer, p.counterfactual_prompt)
            if len(cf) != len(toks):
                raise ValueError(f"counterfactual {p.counterfactual_prompt!r} has {len(cf)} tokens but the prompt "
                                 f"{p.prompt!r} has {len(toks)}: positions would not align (is the new name one token?)")
        else:
            x, y, z = rng.sample([i for n, i in pool.items() if i not in (io, s)], 3)
            cf = list(toks)
            cf[io_at[0]], cf[s_at[0]], cf[s_at[1]] = x, y, z
        clean.append(toks)
        counter.append(cf)
        io_ids.append(io)
        s_ids.append(s)
        where.append((io_at[0], s_at[0], s_at[1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pos = torch.tensor(where)
    labels = {"io_pos": pos[:, 0], "s1_pos": pos[:, 1], "s2_pos": pos[:, 2],
              "template_id": torch.tensor([getattr(p, "template_id", -1) for p in prompts])}
    return PromptBatch.from_token_lists(clean, pad, answer_ids=torch.tensor(io_ids), foil_ids=torch.tensor(s_ids),
                                        counterfactual=PromptBatch.from_token_lists(counter, pad), labels=labels)


def check_aligned(batch: PromptBatch) -> None:
    """Raise unless ``batch`` has a counterfactual whose every prompt has its clean prompt's length (so activations
    at one position can be swapped between the runs) and answer and foil ids."""
    if batch.counterfactual is None:
        raise ValueError("patching needs a PromptBatch with a counterfactual batch (e.g. ioi_patching_batch)")
    if batch.answer_ids is None or batch.foil_ids is None:
        raise ValueError("patching needs a PromptBatch with answer_ids and foil_ids")
    cf = batch.counterfactual
    bad = (batch.lengths != cf.lengths).nonzero().flatten().tolist()
    if bad or cf.tokens.shape != batch.tokens.shape:
        i = bad[0] if bad else 0
        raise ValueError(f"clean and counterfactual prompts must have equal lengths for position-aligned patching; "
                         f"{len(bad)} differ, e.g. prompt {i}: {int(batch.lengths[i])} vs {int(cf.lengths[i])} tokens. "
                         "Build counterfactuals that swap single-token names (ioi_patching_batch)")


def same_length_groups(batch: PromptBatch, keys: Sequence[str] = ()) -> dict[tuple, list[int]]:
    """Indices of the prompts of each length (and of each value of the labels ``keys``, e.g. ``("template_id",
    "io_pos")``), largest group first: prompts whose positions line up, for position-by-position patching maps."""
    groups: dict[tuple, list[int]] = {}
    for i in range(len(batch)):
        k = (int(batch.lengths[i]), *(int(batch.labels[key][i]) for key in keys))
        groups.setdefault(k, []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def ioi_metric(batch: PromptBatch) -> Metric:
    """``logit(answer) - logit(foil)`` at each prompt's final position, for logits of ``k * len(batch)`` rows
    (the batch tiled ``k`` times, as the patching functions tile it: row ``j`` is prompt ``j % len(batch)``)."""
    if batch.answer_ids is None or batch.foil_ids is None:
        raise ValueError("ioi_metric needs a PromptBatch with answer_ids and foil_ids")

    def metric(logits: Tensor) -> Tensor:
        n = len(batch)
        if logits.shape[0] % n:
            raise ValueError(f"logits have {logits.shape[0]} rows, not a multiple of the batch's {n} prompts")
        k = logits.shape[0] // n
        rows = torch.arange(logits.shape[0], device=logits.device)
        final = batch.final_positions.to(logits.device).repeat(k)
        at = logits[rows, final]
        return at[rows, batch.answer_ids.to(logits.device).repeat(k)] - at[rows, batch.foil_ids.to(logits.device).repeat(k)]

    return metric


# ---------------------------------------------------------------------------------------------- patching maps


def _check_pair(tokens: Tensor, counterfactual_act: Tensor, name: str) -> None:
    if tokens.dim() != 2:
        raise ValueError(f"patching takes tokens of shape [batch, pos]; got {tuple(tokens.shape)}")
    if tuple(counterfactual_act.shape[:2]) != tuple(tokens.shape):
        raise ValueError(f"the counterfactual activation at {name} has shape {tuple(counterfactual_act.shape)} but the "
                         f"prompts are {list(tokens.shape)}: the counterfactual prompt must have the same length")


@torch.no_grad()
def position_patching(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], counterfactual_cache: Activations,
                      metric: Metric, hook: Callable[[int], str] = hooks.resid_pre,
                      layers: list[int] | None = None) -> Float[Tensor, "layer pos"]:
    """``metric`` (mean over the prompts) of ``tokens``' run with the activation at ``hook(layer)`` replaced at ONE
    position by the counterfactual run's there, for every layer (rows, default all) and position (columns).

    ``tokens`` are prompts of one length; ``counterfactual_cache`` holds the counterfactual prompts' activations at
    those hooks (``model.run_with_cache``). The forward pass of a layer has ``pos * batch`` rows: position ``p`` of
    prompt ``i`` is row ``p * batch + i``, so ``metric`` sees the batch tiled (as :func:`ioi_metric` expects).
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    n, n_pos = tokens.shape
    one_per_row = torch.eye(n_pos, dtype=torch.bool).repeat_interleave(n, dim=0)  # row p*n+i patches position p only
    rows = []
    for layer in layers:
        name = hook(layer)
        cf_act = counterfactual_cache[name]
        _check_pair(tokens, cf_act, name)
        value = cf_act.repeat(n_pos, *([1] * (cf_act.dim() - 1)))
        with interventions.patched(model, name, value, positions=one_per_row):
            values = metric(model(tokens.repeat(n_pos, 1))).float().cpu()
        rows.append(values.reshape(n_pos, n).mean(1))
    return torch.stack(rows)


def residual_patching(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], counterfactual_cache: Activations,
                      metric: Metric, layers: list[int] | None = None) -> Float[Tensor, "layer pos"]:
    """:func:`position_patching` of ``blocks.{layer}.hook_resid_pre``: where the residual stream carries the answer."""
    return position_patching(model, tokens, counterfactual_cache, metric, hooks.resid_pre, layers)


def attn_out_patching(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], counterfactual_cache: Activations,
                      metric: Metric, layers: list[int] | None = None) -> Float[Tensor, "layer pos"]:
    """:func:`position_patching` of ``blocks.{layer}.hook_attn_out``: which layer's attention writes the answer where."""
    return position_patching(model, tokens, counterfactual_cache, metric, hooks.attn_out, layers)


@torch.no_grad()
def head_patching(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], counterfactual_cache: Activations,
                  metric: Metric, position: int | None | Bool[Tensor, "batch pos"] = -1,
                  layers: list[int] | None = None) -> Float[Tensor, "layer head"]:
    """``metric`` (mean over the prompts) of ``tokens``' run with ONE head's output (``blocks.{layer}.attn.hook_z``,
    before W_O) replaced by the counterfactual run's, for every layer (rows, default all) and head (columns).

    ``position``: where the head's output is replaced: one index (default the last), ``None`` for every position,
    or a ``[batch, pos]`` mask (e.g. each prompt's final position in a right-padded batch of several lengths). Row
    ``h * batch + i`` of a layer's forward pass carries head ``h`` for prompt ``i``.
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    names = [hooks.z(layer) for layer in layers]
    n = tokens.shape[0]
    _, clean_cache = model.run_with_cache(tokens, names_filter=names)
    rows = []
    for name in names:
        clean, cf = clean_cache[name], counterfactual_cache[name]  # [batch pos head d_head]
        _check_pair(tokens, cf, name)
        n_heads = clean.shape[2]
        value = clean.repeat(n_heads, 1, 1, 1)
        for h in range(n_heads):  # rows of head h: the clean output, head h's taken from the counterfactual run
            value[h * n:(h + 1) * n, :, h] = cf[:, :, h]
        if isinstance(position, Tensor):
            if tuple(position.shape) != tuple(tokens.shape):
                raise ValueError(f"position mask has shape {tuple(position.shape)}, expected {tuple(tokens.shape)}")
            where = position.repeat(n_heads, 1)
        else:
            where = None if position is None else [position]
        with interventions.patched(model, name, value, positions=where):
            values = metric(model(tokens.repeat(n_heads, 1))).float().cpu()
        rows.append(values.reshape(n_heads, n).mean(1))
    return torch.stack(rows)


def position_mask(batch: PromptBatch, label: str | None = None) -> Bool[Tensor, "batch pos"]:
    """True at each prompt's final position (``label=None``) or at the position a label names (``"s2_pos"``)."""
    index = batch.final_positions if label is None else batch.labels[label]
    mask = torch.zeros(batch.tokens.shape, dtype=torch.bool)
    mask[torch.arange(len(batch)), index] = True
    return mask


# ---------------------------------------------------------------------------------------------- head roles


@dataclass(frozen=True)
class HeadRole:
    """One attention head's part in IOI, named by where its patch matters and where it looks."""

    layer: int
    head: int
    drop_all: float
    """Drop of the normalised IOI metric (1 - metric) when the head's output is patched at every position."""
    drop_final: float
    """... at the final position only."""
    drop_s2: float
    """... at the second subject position only."""
    attention_to_io: float
    """Mean attention from the final position to the IO name."""
    attention_to_s2: float
    """Mean attention from the final position to the second subject name."""
    role: str
    """``name mover``, ``S-inhibition``, ``S2 position`` (duplicate / induction), or ``negative ...`` when
    patching raises the metric."""

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.head}"


def head_roles(drop_all: Tensor, drop_final: Tensor, drop_s2: Tensor, attention_to_io: Tensor,
               attention_to_s2: Tensor, top: int = 6) -> list[HeadRole]:
    """The ``top`` heads by ``|drop_all|`` (all ``[layer head]``), each named by its effect: a head whose patch
    matters at the final position more than at S2 is a *name mover* when it looks at the IO more than at S2, an
    *S-inhibition* head otherwise; a head whose patch matters most at S2 works there (*S2 position*: duplicate-token
    or induction analogues). ``negative`` marks a head whose patch raises the metric (it works against the answer)."""
    n_heads = drop_all.shape[1]
    order = drop_all.abs().flatten().argsort(descending=True)[:top].tolist()
    out = []
    for i in order:
        layer, head = divmod(i, n_heads)
        final, s2 = float(drop_final[layer, head]), float(drop_s2[layer, head])
        if abs(final) >= abs(s2):
            role = "name mover" if attention_to_io[layer, head] >= attention_to_s2[layer, head] else "S-inhibition"
        else:
            role = "S2 position"
        if float(drop_all[layer, head]) < 0:
            role = f"negative {role}"
        out.append(HeadRole(layer, head, float(drop_all[layer, head]), final, s2, float(attention_to_io[layer, head]),
                            float(attention_to_s2[layer, head]), role))
    return out


@torch.no_grad()
def attention_from_final(model: torch.nn.Module, batch: PromptBatch, label: str) -> Float[Tensor, "layer head"]:
    """Mean attention of every head from each prompt's final position to the position label ``label`` names."""
    names = [hooks.attn_pattern(layer) for layer in range(model.cfg.n_layers)]
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(batch.tokens.to(device), names_filter=names)
    rows = torch.arange(len(batch))
    final, key = batch.final_positions, batch.labels[label]
    return torch.stack([cache[n][rows, :, final, key].float().mean(0).cpu() for n in names])


# ---------------------------------------------------------------------------------------------- from a layer on


@torch.no_grad()
def run_from_layer(model: torch.nn.Module, layer: int, resid: Float[Tensor, "batch pos d_model"],
                   final_positions: Int[Tensor, " batch"] | None = None) -> Tensor:
    """The logits of a run whose residual stream before block ``layer`` (``blocks.{layer}.hook_resid_pre``) is
    ``resid``: blocks ``layer..`` then the final LayerNorm and unembedding, through the bridge's own components (their
    hooks fire). Only the positions ``final_positions`` (one per row) are unembedded when given: ``[batch d_vocab]``;
    else ``[batch pos d_vocab]``.

    TransformerBridge cannot start a forward pass at a layer (``start_at_layer`` raises); calling its blocks one after
    the other skips the layers before ``layer``, whose output ``resid`` already is. Right padding is harmless (the
    blocks are causal). :func:`check_run_from_layer` compares it with the whole model on real prompts.
    """
    return forward_from_layer(model, layer, resid, final_positions)


def forward_from_layer(model: torch.nn.Module, layer: int, resid: Float[Tensor, "batch pos d_model"],
                       final_positions: Int[Tensor, " batch"] | None = None) -> Tensor:
    """:func:`run_from_layer` with gradients (for attribution to ``resid``)."""
    if not hasattr(model, "blocks") or not hasattr(model, "ln_final") or not hasattr(model, "unembed"):
        raise ValueError("run_from_layer needs a TransformerBridge with blocks, ln_final and unembed")
    h = resid
    for block in model.blocks[layer:]:
        out = block(h)
        h = out[0] if isinstance(out, tuple) else out
    if final_positions is not None:
        h = h[torch.arange(h.shape[0], device=h.device), final_positions.to(h.device)]
    return model.unembed(model.ln_final(h))


@torch.no_grad()
def check_run_from_layer(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], layer: int,
                         atol: float = 1e-4) -> float:
    """Largest difference between :func:`run_from_layer` on the cached ``hook_resid_pre`` of ``layer`` and the whole
    model's logits on ``tokens``; raises when it exceeds ``atol`` (the bridge's blocks then need arguments the
    parent model passes them: run the model whole, with hooks, instead)."""
    name = hooks.resid_pre(layer)
    logits, cache = model.run_with_cache(tokens, names_filter=[name])
    diff = (run_from_layer(model, layer, cache[name]) - logits).abs().max().item()
    if diff > atol:
        raise RuntimeError(f"running blocks {layer}.. by hand differs from the whole model by {diff:.3g} > {atol}: this "
                           "model's blocks need the attention mask or other inputs its forward pass builds; use "
                           "mode='hooks' (the whole model with a patching hook)")
    return diff


# ---------------------------------------------------------------------------------------------- IOI, summarised


def _metric_values(model: torch.nn.Module, batch: PromptBatch) -> tuple[float, float]:
    """Mean IOI metric of the clean and of the counterfactual prompts."""
    device = next(model.parameters()).device
    metric = ioi_metric(batch)
    with torch.no_grad():
        clean = metric(model(batch.tokens.to(device))).mean().item()
        corrupted = metric(model(batch.counterfactual.tokens.to(device))).mean().item()
    return clean, corrupted


@dataclass
class HeadAnalysis:
    """Which heads carry IOI: drops of the normalised metric (1 - metric, so 0 = no effect, 1 = all of it) when one
    head's output is patched from the counterfactual run, and where the heads look from the final position."""

    clean: float
    """Mean logit(IO) - logit(S) of the clean prompts."""
    corrupted: float
    """... of the counterfactual prompts."""
    drop_all: Float[Tensor, "layer head"]
    drop_final: Float[Tensor, "layer head"]
    drop_s2: Float[Tensor, "layer head"]
    attention_to_io: Float[Tensor, "layer head"]
    attention_to_s2: Float[Tensor, "layer head"]
    roles: list[HeadRole]


@torch.no_grad()
def ioi_head_analysis(model: torch.nn.Module, batch: PromptBatch, top: int = 6) -> HeadAnalysis:
    """Head patching of ``batch`` (any lengths) at every position, at each final position and at each S2 position,
    the final position's attention to IO and S2, and the ``top`` heads named by :func:`head_roles`."""
    check_aligned(batch)
    device = next(model.parameters()).device
    clean, corrupted = _metric_values(model, batch)
    _, cf_cache = model.run_with_cache(batch.counterfactual.tokens.to(device),
                                       names_filter=[hooks.z(layer) for layer in range(model.cfg.n_layers)])
    tokens, metric = batch.tokens.to(device), ioi_metric(batch)
    drops = {where: normalised_effect(head_patching(model, tokens, cf_cache, metric, position=mask), clean, corrupted)
             for where, mask in [("all", None), ("final", position_mask(batch)), ("s2", position_mask(batch, "s2_pos"))]}
    to_io, to_s2 = attention_from_final(model, batch, "io_pos"), attention_from_final(model, batch, "s2_pos")
    return HeadAnalysis(clean, corrupted, drops["all"], drops["final"], drops["s2"], to_io, to_s2,
                        head_roles(drops["all"], drops["final"], drops["s2"], to_io, to_s2, top=top))


@dataclass
class PositionMaps:
    """Residual-stream and attention-output patching, layer x position, over prompts whose positions line up."""

    residual: Float[Tensor, "layer pos"]
    """Normalised effect (0 = clean answer, 1 = counterfactual's) of patching ``hook_resid_pre`` at one position."""
    attn_out: Float[Tensor, "layer pos"]
    """... of patching ``hook_attn_out``."""
    labels: list[str]
    """Position labels: the first prompt's tokens, with the IO, S1, S2 and final positions marked."""
    prompts: list[int]
    """Which prompts of the batch were used (one template, name order and length)."""


@torch.no_grad()
def ioi_position_maps(model: torch.nn.Module, batch: PromptBatch, max_prompts: int = 16) -> PositionMaps:
    """:func:`residual_patching` and :func:`attn_out_patching` of the largest group of prompts whose template, name
    order and length agree (up to ``max_prompts`` of them), normalised by their own clean and counterfactual means."""
    check_aligned(batch)
    index = next(iter(same_length_groups(batch, ("template_id", "io_pos")).values()))[:max_prompts]
    group = batch.select(index)
    width = int(group.lengths[0])
    device = next(model.parameters()).device
    tokens = group.tokens[:, :width].to(device)
    _, cf_cache = model.run_with_cache(group.counterfactual.tokens[:, :width].to(device))
    clean, corrupted = _metric_values(model, group)
    metric = ioi_metric(group)
    maps = [normalised_effect(fn(model, tokens, cf_cache, metric), clean, corrupted)
            for fn in (residual_patching, attn_out_patching)]
    marks = {int(group.labels["io_pos"][0]): "IO", int(group.labels["s1_pos"][0]): "S1",
             int(group.labels["s2_pos"][0]): "S2", width - 1: "final"}
    words = [model.tokenizer.decode([t]) for t in group.tokens[0, :width].tolist()]
    labels = [f"{w} ({marks[i]})" if i in marks else w for i, w in enumerate(words)]
    return PositionMaps(maps[0], maps[1], labels, index)
