"""Activation patching one place at a time: where in the model does a run's answer live?

Patching the whole residual stream at every position reproduces the counterfactual run by construction and
says nothing. Patching ONE position of one layer (``residual_patching``), or ONE head's output at one position
(``head_patching``), from the counterfactual run into the clean one shows where the information that decides
the answer sits: on IOI, the indirect object's own position through the middle layers, the final position once
heads have moved the name there.

Each function runs one batched forward pass per layer: row ``i`` of the batch carries the ``i``-th patch, so the
rows are independent runs (a causal model mixes positions, never batch rows). ``metric`` maps logits
``[batch pos d_vocab]`` to one number per row, e.g. the final-position logit difference of two names.
``normalised_effect`` turns metric values into 0 (as the clean run) .. 1 (as the counterfactual run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench import hooks, interventions

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, " batch"]]
"""Logits in, one number per batch row out (e.g. logit of the answer minus logit of the foil, last position)."""


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


def _check_pair(tokens: Tensor, counterfactual_act: Tensor, name: str) -> None:
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise ValueError(f"patching takes one prompt, tokens of shape [1, pos]; got {tuple(tokens.shape)}")
    if counterfactual_act.shape[:2] != (1, tokens.shape[1]):
        raise ValueError(f"the counterfactual activation at {name} has shape {tuple(counterfactual_act.shape)} but the "
                         f"prompt is [1, {tokens.shape[1]}]: the counterfactual prompt must have the same length")


@torch.no_grad()
def residual_patching(model: torch.nn.Module, tokens: Int[Tensor, "1 pos"], counterfactual_cache: Activations,
                      metric: Metric, layers: list[int] | None = None) -> Float[Tensor, "layer pos"]:
    """``metric`` of ``tokens``' run with ``blocks.{layer}.hook_resid_pre`` replaced at ONE position by the
    counterfactual run's activation there, for every layer (rows, default all) and position (columns).

    ``counterfactual_cache`` holds the counterfactual prompt's activations at those hooks (``model.run_with_cache``).
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    n_pos = tokens.shape[1]
    one_per_row = torch.eye(n_pos, dtype=torch.bool)  # row p patches position p only
    rows = []
    for layer in layers:
        name = hooks.resid_pre(layer)
        cf_act = counterfactual_cache[name]
        _check_pair(tokens, cf_act, name)
        with interventions.patched(model, name, cf_act.expand(n_pos, *cf_act.shape[1:]), positions=one_per_row):
            rows.append(metric(model(tokens.expand(n_pos, -1))).float().cpu())
    return torch.stack(rows)


@torch.no_grad()
def head_patching(model: torch.nn.Module, tokens: Int[Tensor, "1 pos"], counterfactual_cache: Activations,
                  metric: Metric, position: int = -1, layers: list[int] | None = None) -> Float[Tensor, "layer head"]:
    """``metric`` of ``tokens``' run with ONE head's output (``blocks.{layer}.attn.hook_z``, before W_O) replaced
    at ``position`` by the counterfactual run's, for every layer (rows, default all) and head (columns)."""
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    names = [hooks.z(layer) for layer in layers]
    _, clean_cache = model.run_with_cache(tokens, names_filter=names)
    rows = []
    for name in names:
        clean, cf = clean_cache[name], counterfactual_cache[name]  # [1 pos head d_head]
        _check_pair(tokens, cf, name)
        n_heads = clean.shape[2]
        value = clean.expand(n_heads, *clean.shape[1:]).clone()
        for h in range(n_heads):  # row h: the clean output, head h's taken from the counterfactual run
            value[h, :, h] = cf[0, :, h]
        with interventions.patched(model, name, value, positions=[position]):
            rows.append(metric(model(tokens.expand(n_heads, -1))).float().cpu())
    return torch.stack(rows)
