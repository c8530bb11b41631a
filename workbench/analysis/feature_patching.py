"""Feature patching on IOI, as Cunningham et al. (2023) did it: which dictionary features carry the indirect object?

At one hook (the residual stream before a block), every position of the clean run is rewritten as

    x_patched = (x - x_hat(x)) + decode(c'),    c' = counterfactual codes on the features in S, clean codes elsewhere,

so the clean run's reconstruction error is kept: S = none is the clean run, S = all the counterfactual run's
reconstruction plus the clean error. ``patched_logits`` does this through ``interventions.Splice`` (the real
intervention); the search uses the same formula in a faster form, checked against it.

The greedy search (``greedy_search``, the paper's script): start with every feature patched; for each tau of
``logspace(-5, 0, 50)``, ascending, visit the patched features in a seeded random order and un-patch one when the
KL increase it causes, ``KL(S - {i}) - KL(S)``, stays below tau (a negative increase counts). The KL is
``KL(counterfactual || patched)`` of the next-token distribution at each prompt's final position, averaged over
prompts; the **edit magnitude** is the mean ``||x_clean - x_patched||_2`` over every (prompt, position). Each tau gives
one point of a frontier: features patched against KL, and edit magnitude against KL. (The paper's script computes
``F.kl_div(log p_cf, log p_patched)``, which is ``KL(patched || counterfactual)``; the issue and this module use
``KL(counterfactual || patched)``.)

Cost. The paper's search visits every patched feature at every tau until it is un-patched: thousands of visits per
SAE, each a forward pass over every prompt. What this module does about it, exactly:
- a feature whose codes are equal in both runs at every position changes nothing, so it is never visited (the
  paper's search would drop it at the first tau, its KL increase being exactly 0);
- a visit runs only the prompts whose codes the feature changes (the other prompts' KL cannot move);
- the dictionary's decoder is affine in the codes (checked), so ``x_patched = x_clean + (S * delta_codes) @ D``;
- the model runs from the patched layer on (``patching.run_from_layer``: the bridge's blocks called in turn),
  verified against the whole model, else the whole model runs with a patching hook (``mode="hooks"``), and only up to
  the last final position among a forward pass's prompts (the model is causal: later positions cannot matter);
- visits are *speculative*: one forward pass evaluates the next several visits, each assuming the decisions before
  it go as predicted; rows after the first wrong prediction are run again, so every decision is the one the
  one-at-a-time search makes (``naive_search``, through the real splice, is the reference the tests hold it to).
And approximately, when asked (``band``): features whose predicted increase is far from tau are settled by the
prediction without a visit (see :func:`greedy_search`). Every recorded point is a measured KL either way.
"""

from __future__ import annotations

import html
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench import hooks, interventions
from workbench.analysis import patching
from workbench.dictionaries import baselines
from workbench.dictionaries.training import DictionaryTrainConfig
from workbench.prompts import PromptBatch, kl_divergence, logit_diff

log = logging.getLogger(__name__)

MODES = ("from_layer", "hooks")
"""How the search runs the model: from the patched layer on (the bridge's blocks in turn) or whole, with a hook."""


def default_taus(n: int = 50) -> list[float]:
    """The paper's thresholds: ``logspace(-5, 0, n)``."""
    return np.logspace(-5, 0, n).tolist()


def feature_mask(features: Sequence[int] | Tensor, d_sae: int) -> Bool[Tensor, " d_sae"]:
    """A ``[d_sae]`` bool mask from feature indices (or a mask, checked)."""
    if isinstance(features, Tensor) and features.dtype == torch.bool:
        if features.shape != (d_sae,):
            raise ValueError(f"feature mask has shape {tuple(features.shape)}, expected ({d_sae},)")
        return features.cpu()
    mask = torch.zeros(d_sae, dtype=torch.bool)
    index = torch.as_tensor(list(features) if not isinstance(features, Tensor) else features, dtype=torch.long)
    if len(index) and (index.min() < 0 or index.max() >= d_sae):
        raise ValueError(f"feature indices must lie in 0..{d_sae - 1}; got {index.min().item()}..{index.max().item()}")
    mask[index] = True
    return mask


def patch_codes(counterfactual_codes: Float[Tensor, "batch pos d_sae"],
                features: Sequence[int] | Tensor) -> interventions.CodesEdit:
    """The edit of feature patching: the codes of ``features`` taken from the counterfactual run, the rest kept."""
    mask = feature_mask(features, counterfactual_codes.shape[-1])

    def edit(codes: Tensor) -> Tensor:
        if codes.shape != counterfactual_codes.shape:
            raise ValueError(f"the clean run's codes have shape {tuple(codes.shape)} but the counterfactual codes "
                             f"{tuple(counterfactual_codes.shape)}: patch prompts of the same lengths")
        return torch.where(mask.to(codes.device), counterfactual_codes.to(codes.device, codes.dtype), codes)

    return edit


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode(dictionary, x: Float[Tensor, "batch pos d_in"]) -> Float[Tensor, "batch pos d_sae"]:
    """The dictionary's codes of ``x`` (flattened for the encoder, on its device), returned like ``x``."""
    param = dictionary.W_dec
    flat = x.reshape(-1, x.shape[-1]).to(param.device, param.dtype)
    return dictionary.encode(flat).reshape(*x.shape[:-1], -1).to(x.device, torch.float32)


@torch.no_grad()
def patched_logits(model: torch.nn.Module, batch: PromptBatch, dictionary, hook: str,
                   features: Sequence[int] | Tensor) -> Float[Tensor, "batch pos d_vocab"]:
    """The clean prompts' logits with ``features`` patched from the counterfactual run at every position of ``hook``
    (the real intervention: an ``interventions.Splice`` whose edit swaps codes, clean error kept)."""
    patching.check_aligned(batch)
    device = _device(model)
    _, cache = model.run_with_cache(batch.counterfactual.tokens.to(device), names_filter=[hook])
    splice = interventions.Splice(dictionary, hook, edit=patch_codes(encode(dictionary, cache[hook]), features))
    with interventions.spliced(model, splice):
        return model(batch.tokens.to(device))


# ---------------------------------------------------------------------------------------------- the problem


@dataclass
class FeaturePatchingProblem:
    """What the search needs for one dictionary at one hook, computed once by :func:`prepare`."""

    name: str
    """The dictionary's name (e.g. ``"SAE (standard)"``, ``"PCA"``)."""
    layer: int
    hook: str
    """``blocks.{layer}.hook_resid_pre``."""
    tokens: Int[Tensor, "batch pos"]
    """The clean prompts (right-padded)."""
    final_positions: Int[Tensor, " batch"]
    mask: Bool[Tensor, "batch pos"]
    """True at real (non-pad) positions: where the edit magnitude is averaged."""
    clean_resid: Float[Tensor, "batch pos d_model"]
    delta_codes: Float[Tensor, "batch pos d_sae"]
    """Counterfactual minus clean codes (0 at pads)."""
    directions: Float[Tensor, "d_sae d_model"]
    """What one unit of each code adds to the decoder's output (``decode(e_i) - decode(0)``)."""
    candidates: Int[Tensor, " n_candidates"]
    """Features whose codes differ between the runs somewhere: the only ones worth a visit."""
    counterfactual_final_logits: Float[Tensor, "batch d_vocab"]
    kl_clean: float
    """``KL(counterfactual || clean)``: the KL with no feature patched."""
    error_norm: float
    """Mean norm of the clean run's reconstruction error (what every patched run keeps)."""

    @property
    def d_sae(self) -> int:
        return self.directions.shape[0]

    def edit(self, features: Bool[Tensor, " d_sae"]) -> Float[Tensor, "batch pos d_model"]:
        """``x_patched - x_clean`` when ``features`` are patched (only the patched features' columns are multiplied:
        a few hundred of an SAE's thousands)."""
        index = features.nonzero().flatten()
        return self.delta_codes[..., index] @ self.directions[index]

    def edit_magnitude(self, features: Bool[Tensor, " d_sae"]) -> float:
        """Mean ``||x_clean - x_patched||_2`` over every real (prompt, position)."""
        return self.edit(features).norm(dim=-1)[self.mask].mean().item()


@torch.no_grad()
def prepare(model: torch.nn.Module, batch: PromptBatch, dictionary, layer: int, name: str = "dictionary",
            atol: float = 1e-3) -> FeaturePatchingProblem:
    """Cache both runs at ``blocks.{layer}.hook_resid_pre``, encode them, and check that the dictionary's decoder is
    affine in the codes (so a patched residual is ``x_clean + (S * delta_codes) @ directions`` exactly) by comparing
    the paper's formula ``(x - x_hat(x)) + decode(c')`` with it at S = all, to ``atol``."""
    patching.check_aligned(batch)
    hook = hooks.resid_pre(layer)
    device = _device(model)
    clean_logits, clean_cache = model.run_with_cache(batch.tokens.to(device), names_filter=[hook])
    cf_logits, cf_cache = model.run_with_cache(batch.counterfactual.tokens.to(device), names_filter=[hook])
    x, x_cf = clean_cache[hook].float().cpu(), cf_cache[hook].float().cpu()
    if x.shape[-1] != dictionary.W_dec.shape[-1]:
        raise ValueError(f"{name} decodes to width {dictionary.W_dec.shape[-1]} but {hook} has width {x.shape[-1]}: "
                         "is it the dictionary for this hook and model?")
    mask = torch.arange(x.shape[1])[None, :] < batch.lengths[:, None]
    codes, codes_cf = encode(dictionary, x), encode(dictionary, x_cf)
    delta = (codes_cf - codes) * mask[..., None]
    directions = _directions(dictionary)
    recon = _decode(dictionary, codes)
    literal = (x - recon) + _decode(dictionary, codes_cf)
    affine = x + delta @ directions
    gap = (literal - affine)[mask].abs().max().item()
    if gap > atol * max(1.0, x.abs().max().item()):
        raise ValueError(f"{name}'s decoder is not affine in its codes (the fast patched residual differs from "
                         f"(x - x_hat) + decode(c') by {gap:.3g}): feature patching here needs decode(c) = c @ D + b")
    rows = torch.arange(len(batch))
    final = batch.final_positions
    changed = (delta != 0).flatten(0, 1).any(0).nonzero().flatten()
    cf_final = cf_logits[rows.to(cf_logits.device), final.to(cf_logits.device)].float().cpu()
    clean_final = clean_logits[rows.to(device), final.to(device)].float().cpu()
    return FeaturePatchingProblem(
        name=name, layer=layer, hook=hook, tokens=batch.tokens.cpu(), final_positions=final.cpu(), mask=mask,
        clean_resid=x, delta_codes=delta, directions=directions, candidates=changed,
        counterfactual_final_logits=cf_final, kl_clean=kl_divergence(cf_final, clean_final).mean().item(),
        error_norm=(x - recon).norm(dim=-1)[mask].mean().item())


def _decode(dictionary, codes: Tensor) -> Tensor:
    param = dictionary.W_dec
    flat = codes.reshape(-1, codes.shape[-1]).to(param.device, param.dtype)
    return dictionary.decode(flat).reshape(*codes.shape[:-1], -1).float().cpu()


@torch.no_grad()
def _directions(dictionary) -> Float[Tensor, "d_sae d_model"]:
    """``decode(e_i) - decode(0)`` for every feature: the decoder's rows as the dictionary applies them (any scaling
    it does in ``decode`` included)."""
    d_sae = dictionary.W_dec.shape[0]
    out = []
    zero = _decode(dictionary, torch.zeros(1, d_sae))
    for start in range(0, d_sae, 1024):
        eye = torch.eye(d_sae)[start:start + 1024]
        out.append(_decode(dictionary, eye) - zero)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------- the search


@dataclass
class SearchCost:
    """What one search cost."""

    mode: str
    """``from_layer`` or ``hooks`` (see :data:`MODES`)."""
    seconds: float
    forward_passes: int
    """Forward passes of the model (each over several candidate rows)."""
    rows: int
    """Prompt runs evaluated (one per prompt a visited feature changes), including speculative ones discarded after a
    wrong prediction."""
    decisions: int
    """Visits of the one-at-a-time search (each decided by one evaluation)."""
    mispredictions: int
    """Visits whose outcome differed from the prediction (the rows after them were run again)."""
    decided_by_prediction: int = 0
    """Features kept or un-patched on a first-order prediction without a visit (0 in the paper's search)."""
    band: float | None = None
    """The search's ``band`` (None: the paper's search, every decision measured)."""

    @property
    def seconds_per_decision(self) -> float:
        return self.seconds / max(self.decisions, 1)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "seconds": round(self.seconds, 3), "forward_passes": self.forward_passes,
                "rows": self.rows, "decisions": self.decisions, "mispredictions": self.mispredictions,
                "decided_by_prediction": self.decided_by_prediction, "band": self.band,
                "seconds_per_decision": self.seconds_per_decision}


@dataclass
class SearchResult:
    """A greedy search's frontier: one point at the start (every candidate patched) and one after each tau."""

    name: str
    layer: int
    taus: list[float]
    n_features: list[int]
    """Features patched after each tau."""
    kl: list[float]
    """``KL(counterfactual || patched)`` at the final position (mean over prompts) after each tau."""
    edit_magnitude: list[float]
    """Mean ``||x_clean - x_patched||_2`` after each tau."""
    start: dict[str, float]
    """``n_features``, ``kl`` and ``edit_magnitude`` with every candidate patched (S = all)."""
    kl_clean: float
    """``KL(counterfactual || clean)``: nothing patched."""
    d_sae: int
    candidates: list[int]
    """Features visited (codes differ between the runs); the rest never change the run."""
    unpatched_at: list[int]
    """For each candidate, the index of the tau at which it was un-patched (``len(taus)``: never)."""
    cost: SearchCost | None = field(default=None, compare=False)

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(n_features, kl, edit_magnitude)`` of the start and of every tau."""
        return (np.array([self.start["n_features"], *self.n_features], dtype=float),
                np.array([self.start["kl"], *self.kl]), np.array([self.start["edit_magnitude"], *self.edit_magnitude]))

    def features_needed_at(self, kl: float) -> int | None:
        """Fewest features patched at any point whose KL is at most ``kl`` (None: no point gets that close)."""
        n, k, _ = self.points()
        ok = k <= kl
        return int(n[ok].min()) if ok.any() else None

    def edit_magnitude_at(self, kl: float) -> float | None:
        """Smallest edit magnitude at any point whose KL is at most ``kl`` (None: no point gets that close)."""
        _, k, e = self.points()
        ok = k <= kl
        return float(e[ok].min()) if ok.any() else None

    def patched_at(self, index: int) -> list[int]:
        """The features still patched after tau number ``index``, longest-surviving first."""
        alive = [(u, f) for f, u in zip(self.candidates, self.unpatched_at, strict=True) if u > index]
        return [f for _, f in sorted(alive, key=lambda uf: -uf[0])]

    def ranked_features(self) -> list[int]:
        """Candidates by how long they stayed patched (last un-patched first): the features that carry the effect."""
        order = sorted(zip(self.unpatched_at, self.candidates, strict=True), key=lambda uf: -uf[0])
        return [f for _, f in order]

    def to_dict(self) -> dict:
        return {"name": self.name, "layer": self.layer, "taus": self.taus, "n_features": self.n_features,
                "kl": self.kl, "edit_magnitude": self.edit_magnitude, "start": self.start, "kl_clean": self.kl_clean,
                "d_sae": self.d_sae, "n_candidates": len(self.candidates),
                "cost": None if self.cost is None else self.cost.to_dict()}


class _Evaluator:
    """Per-prompt KL of candidate residuals at the patched hook: rows ``[rows pos d_model]``, each one prompt's
    residual (``prompt[r]`` says which), -> ``KL(counterfactual || patched)`` at that prompt's final position."""

    def __init__(self, model: torch.nn.Module, problem: FeaturePatchingProblem, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model, self.problem, self.mode = model, problem, mode
        self.device = _device(model)
        self.forward_passes = 0
        self.rows = 0

    @torch.no_grad()
    def __call__(self, resid: Float[Tensor, "rows pos d_model"], prompt: Int[Tensor, " rows"]) -> Float[Tensor, " rows"]:
        p = self.problem
        final = p.final_positions[prompt]
        width = int(final.max()) + 1  # positions after every row's final one cannot change its logits (causal model)
        resid = resid[:, :width]
        if self.mode == "from_layer":
            logits = patching.run_from_layer(self.model, p.layer, resid.to(self.device), final)
        else:
            with interventions.patched(self.model, p.hook, resid.to(self.device)):
                full = self.model(p.tokens[prompt, :width].to(self.device))
            logits = full[torch.arange(len(prompt), device=full.device), final.to(full.device)]
        self.forward_passes += 1
        self.rows += len(prompt)
        return kl_divergence(p.counterfactual_final_logits[prompt], logits.float().cpu())

    def per_prompt(self, S: Bool[Tensor, " d_sae"]) -> Float[Tensor, " batch"]:
        """Each prompt's KL with the features ``S`` patched."""
        p = self.problem
        return self(p.clean_resid + p.edit(S), torch.arange(p.tokens.shape[0]))

    def first_order(self, S: Bool[Tensor, " d_sae"]) -> dict[int, float]:
        """The first-order term of each patched candidate's KL increase when un-patched from ``S``,
        ``-grad KL . edit_i`` (one backward pass over every prompt)."""
        p = self.problem
        with torch.enable_grad():
            x = (p.clean_resid + p.edit(S)).to(self.device).requires_grad_(True)
            if self.mode == "from_layer":
                logits = patching.forward_from_layer(self.model, p.layer, x, p.final_positions)
            else:
                with interventions.patched(self.model, p.hook, x):
                    full = self.model(p.tokens.to(self.device))
                logits = full[torch.arange(len(x), device=full.device), p.final_positions.to(full.device)]
            kl = kl_divergence(p.counterfactual_final_logits.to(logits.device), logits.float()).mean()
            (grad,) = torch.autograd.grad(kl, x)
        live = p.candidates[S[p.candidates]]
        along = (grad.cpu() @ p.directions[live].T) * p.delta_codes[..., live]  # [batch pos n_live]
        return dict(zip(live.tolist(), (-along.sum((0, 1))).tolist(), strict=True))


def greedy_search(model: torch.nn.Module, problem: FeaturePatchingProblem, taus: Sequence[float] | None = None,
                  seed: int = 0, mode: str = "from_layer", band: float | None = None, token_budget: int = 8192,
                  progress: bool = True) -> SearchResult:
    """The paper's greedy search on ``problem`` (see the module docstring), batched.

    ``taus`` ascending (default :func:`default_taus`); the visiting order of each tau is a fresh permutation from one
    generator seeded with ``seed``, so the search is deterministic. ``mode="from_layer"`` runs only the blocks from
    the patched layer on (``patching.check_run_from_layer`` first confirms it matches the whole model); ``"hooks"``
    runs the whole model. ``token_budget`` bounds the tokens of one forward pass.

    ``band=None`` (default) is the paper's search: every decision is taken on a measured KL. A factor ``b > 1`` makes
    it cheaper and approximate: a prediction of each increase (below) un-patches, together and before the visits, the
    features predicted under ``tau / b``, keeps those predicted over ``tau * b``, and visits only the rest. Every
    recorded point is still the measured KL of the set it names; only the path can differ from the paper's.

    Predictions (which in the paper's search only order the speculative rows): an exact screening pass measures each
    candidate's increase from the full set; afterwards a feature's increase is predicted as the first-order term at
    the current set (``-grad KL . edit_i``, one backward pass per tau) plus the remainder measured at its last visit
    (the curvature the first-order term misses: all of it at a run that already equals the counterfactual one).
    """
    taus = default_taus() if taus is None else [float(t) for t in taus]
    if any(b < a for a, b in zip(taus, taus[1:], strict=False)):
        raise ValueError(f"taus must be ascending, got {taus[:5]}...")
    if band is not None and not band > 1:
        raise ValueError(f"band must be a factor above 1 (or None for the paper's search), got {band}")
    if mode == "from_layer":
        patching.check_run_from_layer(model, problem.tokens[:4].to(_device(model)), problem.layer)
    search = _Search(_Evaluator(model, problem, mode), token_budget, seed, len(taus))
    for t_index, tau in enumerate(tqdm(taus, desc=f"{problem.name} L{problem.layer}", disable=not progress)):
        search.step(t_index, tau, band)
    return search.result(taus, band)


class _Search:
    """The state of one greedy search: the patched set, each prompt's KL, predictions, and the tallies."""

    def __init__(self, evaluate: _Evaluator, token_budget: int, seed: int, n_taus: int) -> None:
        p = self.p = evaluate.problem
        self.evaluate = evaluate
        self.started = time.perf_counter()
        self.max_rows = max(1, token_budget // p.tokens.shape[1])
        self.prompts_of = {int(i): (p.delta_codes[..., i] != 0).any(1).nonzero().flatten() for i in p.candidates}
        self.S = torch.zeros(p.d_sae, dtype=torch.bool)
        self.S[p.candidates] = True
        self.kl_b = evaluate.per_prompt(self.S)  # each prompt's KL in the current state
        self.start = {"n_features": int(self.S.sum()), "kl": self.kl_b.mean().item(),
                      "edit_magnitude": p.edit_magnitude(self.S)}
        self.unpatched_at = dict.fromkeys(p.candidates.tolist(), n_taus)
        self.generator = torch.Generator().manual_seed(seed)
        self.record: dict[str, list] = {"n_features": [], "kl": [], "edit_magnitude": []}
        self.tally = {"decisions": 0, "mispredictions": 0, "predicted": 0}
        self.miss = 0.1  # running rate of wrong guesses per visit, which sets how many visits a forward pass holds
        self.first_order: dict[int, float] = {}
        self.remainder = self._screen()

    def _screen(self) -> dict[int, float]:
        """Each candidate's measured increase from the full set, minus its first-order term there."""
        self.first_order = self.evaluate.first_order(self.S)
        order, measured, at = self.p.candidates.tolist(), {}, 0
        while at < len(order):
            chunk = _chunk(order, at, self.prompts_of, self.max_rows, 0.0)
            rows, prompt, owner = _speculative_rows(self.p, self.S, chunk, [False] * len(chunk), self.prompts_of)
            kls = self.evaluate(rows, prompt)
            for k, feature in enumerate(chunk):
                mine = owner == k
                measured[feature] = (kls[mine] - self.kl_b[prompt[mine]]).sum().item() / len(self.kl_b)
            at += len(chunk)
        return {i: measured[i] - self.first_order[i] for i in order}

    def _predicted(self, i: int) -> float:
        return self.first_order[i] + self.remainder[i]

    def step(self, t_index: int, tau: float, band: float | None) -> None:
        """One tau: visit the patched features in a fresh random order, un-patching those whose increase is below tau."""
        order = [i for i in torch.randperm(self.p.d_sae, generator=self.generator).tolist() if self.S[i]]
        if order:
            self.first_order = self.evaluate.first_order(self.S)
        if band is not None and order:
            certain = [i for i in order if self._predicted(i) < tau / band]
            visit = [i for i in order if tau / band <= self._predicted(i) <= tau * band]
            self.tally["predicted"] += len(order) - len(visit)
            order = visit
            if certain:
                self.S[certain] = False
                for i in certain:
                    self.unpatched_at[i] = t_index
                self.kl_b = self.evaluate.per_prompt(self.S)
                if order:
                    self.first_order = self.evaluate.first_order(self.S)
        at = 0
        while at < len(order):
            at += self._visit(order, at, t_index, tau)
        self.record["n_features"].append(int(self.S.sum()))
        self.record["kl"].append(self.kl_b.mean().item())
        self.record["edit_magnitude"].append(self.p.edit_magnitude(self.S))

    def _visit(self, order: list[int], at: int, t_index: int, tau: float) -> int:
        """Evaluate the next visits of ``order`` in one forward pass, each assuming the guesses before it hold; apply
        their decisions up to the first wrong guess. Returns how many visits were decided."""
        chunk = _chunk(order, at, self.prompts_of, self.max_rows, self.miss)
        guess = [self._predicted(i) < tau for i in chunk]
        rows, prompt, owner = _speculative_rows(self.p, self.S, chunk, guess, self.prompts_of)
        kls = self.evaluate(rows, prompt)
        reference = self.kl_b.clone()
        for k, feature in enumerate(chunk):
            mine = owner == k
            increase = (kls[mine] - reference[prompt[mine]]).sum().item() / len(reference)
            self.remainder[feature] = increase - self.first_order[feature]
            drop = increase < tau
            self.tally["decisions"] += 1
            if drop:
                self.S[feature] = False
                self.unpatched_at[feature] = t_index
                reference[prompt[mine]] = kls[mine]
            self.miss = 0.9 * self.miss + 0.1 * (drop != guess[k])
            if drop != guess[k]:  # the rows after this one assumed the other outcome: they are run again
                self.tally["mispredictions"] += 1
                self.kl_b = reference
                return k + 1
        self.kl_b = reference
        return len(chunk)

    def result(self, taus: list[float], band: float | None) -> SearchResult:
        p, e = self.p, self.evaluate
        cost = SearchCost(e.mode, time.perf_counter() - self.started, e.forward_passes, e.rows,
                          self.tally["decisions"], self.tally["mispredictions"], self.tally["predicted"], band)
        return SearchResult(p.name, p.layer, taus, self.record["n_features"], self.record["kl"],
                            self.record["edit_magnitude"], self.start, p.kl_clean, p.d_sae, p.candidates.tolist(),
                            [self.unpatched_at[i] for i in p.candidates.tolist()], cost)


OVERHEAD_ROWS = 3.0
"""The fixed cost of one forward pass, in prompt runs (measured on CPU: about 4.5 ms against 1.4 ms per prompt)."""


def _chunk(order: list[int], at: int, prompts_of: dict[int, Tensor], max_rows: int, miss: float) -> list[int]:
    """The next visits to evaluate in one forward pass: the number that maximises the visits decided per prompt run
    when each guess is wrong with probability ``miss`` (visit ``k`` is decided only if the guesses before it held:
    ``(1 - (1 - miss)^k) / miss`` decided for ``OVERHEAD_ROWS + rows`` run), within ``max_rows`` rows, at least one.
    ``miss = 0`` takes as many as fit."""
    q = min(max(miss, 0.0), 1.0)
    rows, end, best, best_end = OVERHEAD_ROWS, at, -1.0, at + 1
    while end < len(order) and (end == at or rows + len(prompts_of[order[end]]) <= max_rows + OVERHEAD_ROWS):
        rows += len(prompts_of[order[end]])
        end += 1
        k = end - at
        decided = k if q == 0 else (1 - (1 - q) ** k) / q
        if decided / rows >= best:
            best, best_end = decided / rows, end
        elif q > 0:
            break
    return order[at:best_end]


def _speculative_rows(p: FeaturePatchingProblem, S: Tensor, chunk: list[int], guess: list[bool],
                      prompts_of: dict[int, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """For visit ``k`` of ``chunk``, one row per prompt its feature changes: that prompt's residual with the feature
    un-patched from ``S``, after un-patching the earlier features of the chunk predicted (``guess``) to be dropped:
    the state the one-at-a-time search visits it in, if the predictions before it hold. Prompts a feature does not
    change keep their KL, so they need no row. Returns the rows, their prompt and the visit (``owner``) of each."""
    base = p.clean_resid + p.edit(S)  # [batch pos d]
    dropped: dict[int, Tensor] = {}
    rows, prompt, owner = [], [], []
    for k, feature in enumerate(chunk):
        index = prompts_of[feature]
        own = p.delta_codes[index, :, feature, None] * p.directions[feature]  # [n pos d]
        before = torch.stack([dropped.get(b, torch.zeros_like(own[0])) for b in index.tolist()])
        rows.append(base[index] - before - own)
        prompt.append(index)
        owner.append(torch.full((len(index),), k))
        if guess[k]:
            for j, b in enumerate(index.tolist()):
                dropped[b] = dropped.get(b, 0) + own[j]
    return torch.cat(rows), torch.cat(prompt), torch.cat(owner)


def naive_search(model: torch.nn.Module, batch: PromptBatch, dictionary, layer: int,
                 taus: Sequence[float], seed: int = 0) -> list[tuple[int, float]]:
    """The search one visit at a time through :func:`patched_logits` (the real intervention): ``(n_features, kl)``
    after each tau. Slow; the reference the fast search is tested against."""
    problem = prepare(model, batch, dictionary, layer)
    cf_final = problem.counterfactual_final_logits
    rows = torch.arange(len(batch))

    def kl_of(S: Tensor) -> float:
        logits = patched_logits(model, batch, dictionary, problem.hook, S)
        return kl_divergence(cf_final, logits[rows, batch.final_positions].float().cpu()).mean().item()

    S = torch.zeros(problem.d_sae, dtype=torch.bool)
    S[problem.candidates] = True
    kl_now = kl_of(S)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for tau in taus:
        for i in [i for i in torch.randperm(problem.d_sae, generator=generator).tolist() if S[i]]:
            S[i] = False
            kl = kl_of(S)
            if kl - kl_now < tau:
                kl_now = kl
            else:
                S[i] = True
        out.append((int(S.sum()), kl_now))
    return out


# ---------------------------------------------------------------------------------------------- comparing frontiers


def edit_attainment(result: SearchResult, kl_grid: np.ndarray) -> np.ndarray:
    """For each KL of ``kl_grid``: the smallest edit magnitude among the frontier's points with KL at most that
    (``inf`` where no point gets that close to the counterfactual run)."""
    _, kl, edit = result.points()
    return np.array([edit[kl <= k].min() if (kl <= k).any() else np.inf for k in kl_grid])


@dataclass(frozen=True)
class Comparison:
    """Frontier ``a`` against frontier ``b`` on edit magnitude, over the KL range both reach."""

    a: str
    b: str
    dominates: bool
    """``a`` needs no larger edit than ``b`` at any KL of the shared range, and a smaller one somewhere."""
    share_lower: float
    """Share of the shared KL range (a grid of KL values) where ``a`` needs a strictly smaller edit."""
    edit_ratio_at_kl: float | None
    """``a``'s edit magnitude over ``b``'s at the reference KL (None when either cannot reach it)."""

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "dominates": self.dominates, "share_lower": self.share_lower,
                "edit_ratio_at_kl": self.edit_ratio_at_kl}


def compare(a: SearchResult, b: SearchResult, kl_reference: float, n_grid: int = 100) -> Comparison:
    """Does ``a``'s frontier beat ``b``'s on edit magnitude? Over the KL range both frontiers reach (from the larger
    of their smallest KLs to the clean run's KL), on a log-spaced grid of ``n_grid`` KL values."""
    low = max(a.points()[1].min(), b.points()[1].min(), 1e-9)
    high = max(a.kl_clean, low * 1.0001)
    grid = np.geomspace(low, high, n_grid)
    ea, eb = edit_attainment(a, grid), edit_attainment(b, grid)
    both = np.isfinite(ea) & np.isfinite(eb)
    lower = ea[both] < eb[both]
    dominates = bool(both.any() and (ea[both] <= eb[both]).all() and lower.any())
    ra, rb = a.edit_magnitude_at(kl_reference), b.edit_magnitude_at(kl_reference)
    ratio = None if ra is None or rb is None or rb == 0 else ra / rb
    return Comparison(a.name, b.name, dominates, float(lower.mean()) if both.any() else 0.0, ratio)


# ---------------------------------------------------------------------------------------------- where features sit


def feature_positions(problem: FeaturePatchingProblem, batch: PromptBatch, feature: int) -> dict[str, float]:
    """Where a feature's code changes between the runs: the share of ``sum |delta code|`` at the IO name, the first
    and second subject name, the final position and everywhere else (labels ``io_pos``, ``s1_pos``, ``s2_pos``)."""
    delta = problem.delta_codes[..., feature].abs()
    total = delta.sum().item()
    rows = torch.arange(len(batch))
    shares: dict[str, float] = {}
    taken = torch.zeros_like(delta, dtype=torch.bool)
    for role, index in [("IO", batch.labels["io_pos"]), ("S1", batch.labels["s1_pos"]),
                        ("S2", batch.labels["s2_pos"]), ("final", batch.final_positions)]:
        shares[role] = delta[rows, index].sum().item() / total if total else 0.0
        taken[rows, index] = True
    shares["other"] = delta[~taken].sum().item() / total if total else 0.0
    return shares


# ---------------------------------------------------------------------------------------------- explore by hand


@dataclass
class ExplorerView:
    """One prompt patched by hand: its logit differences and top next tokens."""

    prompt: str
    counterfactual: str
    logit_diff_clean: float
    logit_diff_counterfactual: float
    logit_diff_patched: float
    top_tokens: list[tuple[str, float]]
    """The patched run's most likely next tokens and their probabilities."""
    patched: str
    """What was patched, in words."""

    def html(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{p:.3f}</td></tr>" for t, p in self.top_tokens)
        return (f"<p><b>clean</b>: {html.escape(self.prompt)}<br><b>counterfactual</b>: "
                f"{html.escape(self.counterfactual)}</p><p>patched: {html.escape(self.patched)}</p>"
                f"<p>logit(IO) - logit(S): clean <b>{self.logit_diff_clean:.2f}</b>, counterfactual "
                f"<b>{self.logit_diff_counterfactual:.2f}</b>, patched <b>{self.logit_diff_patched:.2f}</b></p>"
                f"<table><tr><th>next token</th><th>p</th></tr>{rows}</table>")


@torch.no_grad()
def explore(model: torch.nn.Module, batch: PromptBatch, index: int, layer: int | None = None, dictionary=None,
            features: Sequence[int] = (), heads: Sequence[tuple[int, int]] = (), k: int = 5) -> ExplorerView:
    """Prompt ``index`` of ``batch`` with ``features`` of ``dictionary`` patched from its counterfactual at every
    position of ``blocks.{layer}.hook_resid_pre`` (clean error kept) and the outputs of ``heads`` (``(layer, head)``)
    patched at every position: logit differences and the top ``k`` next tokens."""
    one = batch.select([index])
    patching.check_aligned(one)
    device = _device(model)
    tokens, cf_tokens = one.tokens.to(device), one.counterfactual.tokens.to(device)
    z_names = sorted({hooks.z(layer_) for layer_, _ in heads})
    hook = hooks.resid_pre(layer) if layer is not None else None
    _, cf_cache = model.run_with_cache(cf_tokens, names_filter=z_names + ([hook] if hook else []))
    fwd_hooks = []
    for name in z_names:
        picked = [h for layer_, h in heads if hooks.z(layer_) == name]

        def swap(z: Tensor, hook_point, name: str = name, picked: list[int] = picked) -> Tensor:
            z = z.clone()
            z[:, :, picked] = cf_cache[name][:, :, picked].to(z.dtype)
            return z

        fwd_hooks.append((name, swap))
    if features:
        if dictionary is None or layer is None:
            raise ValueError("patching features needs a layer and its dictionary")
        splice = interventions.Splice(dictionary, hook, edit=patch_codes(encode(dictionary, cf_cache[hook]), features))
        fwd_hooks += splice.fwd_hooks()
    final = int(one.final_positions[0])
    clean_final = model(tokens)[:, final]
    cf_final = model(cf_tokens)[:, final]
    if fwd_hooks:
        with interventions.hooked(model, fwd_hooks):
            patched_final = model(tokens)[:, final]
    else:
        patched_final = clean_final
    probs = patched_final[0].float().softmax(-1)
    top = probs.topk(k)
    what = ", ".join([f"{len(features)} feature(s) at layer {layer}"] * bool(features) +
                     [f"head(s) {', '.join(f'{a}.{b}' for a, b in heads)}"] * bool(heads)) or "nothing (the clean run)"
    diff = lambda logits: logit_diff(logits.float().cpu(), one).item()  # noqa: E731
    return ExplorerView(model.to_string(one.tokens[0, 1:int(one.lengths[0])]),
                        model.to_string(one.counterfactual.tokens[0, 1:int(one.lengths[0])]), diff(clean_final),
                        diff(cf_final), diff(patched_final),
                        [(model.tokenizer.decode([i]), v) for i, v in zip(top.indices.tolist(), top.values.tolist(),
                                                                            strict=True)], what)


def explorer(model: torch.nn.Module, batch: PromptBatch, dictionaries: dict[int, object],
             features: dict[int, Sequence[int]], n_prompts: int = 20):
    """An ipywidgets control: pick a prompt and a layer, tick features (of that layer's dictionary, from
    ``features[layer]``) or heads to patch from the counterfactual run, and read the logit difference and the top
    next tokens (:func:`explore`). The controls are the box's ``prompt``, ``layer``, ``features`` and ``heads``
    attributes and the view its ``view`` (an HTML widget whose value updates on every change, with or without a
    front end)."""
    import ipywidgets as widgets

    if not dictionaries:
        raise ValueError("explorer needs at least one layer's dictionary")
    options = [(model.to_string(batch.tokens[i, 1:int(batch.lengths[i])])[:80], i)
               for i in range(min(n_prompts, len(batch)))]
    prompt = widgets.Dropdown(options=options, value=0, description="prompt", layout={"width": "95%"})
    layer = widgets.Dropdown(options=sorted(dictionaries), description="layer")
    feature_box = widgets.SelectMultiple(options=list(features.get(layer.value, [])), description="features",
                                         rows=8)
    head_box = widgets.SelectMultiple(options=[(f"{a}.{b}", (a, b)) for a in range(model.cfg.n_layers)
                                               for b in range(model.cfg.n_heads)], description="heads", rows=8)
    view = widgets.HTML()

    def update(_change=None) -> None:
        result = explore(model, batch, prompt.value, layer.value, dictionaries[layer.value], list(feature_box.value),
                         list(head_box.value))
        view.value = result.html()

    def new_layer(change: dict) -> None:
        feature_box.unobserve(update, names="value")
        feature_box.value = ()
        feature_box.options = list(features.get(change["new"], []))
        feature_box.observe(update, names="value")
        update()

    for control in (prompt, head_box, feature_box):
        control.observe(update, names="value")
    layer.observe(new_layer, names="value")
    update()
    box = widgets.VBox([prompt, widgets.HBox([layer, feature_box, head_box]), view])
    box.prompt, box.layer, box.features, box.heads, box.view = prompt, layer, feature_box, head_box, view
    return box


# ---------------------------------------------------------------------------------------------- notebook 05


def baseline_dictionaries(acts: Float[Tensor, "n d_in"], seed: int = 0, ica_rows: int = 20_000,
                          ica_max_iter: int = 400) -> dict[str, object]:
    """Cunningham et al.'s comparisons as full bases of the hook's space (each reconstructs exactly, so patching every
    feature is patching the whole activation): PCA, ICA, random orthonormal directions and the residual basis.
    ``ica_max_iter``: FastICA's iteration bound (smoke runs, whose few rows never converge, pass a small one)."""
    from sklearn.exceptions import ConvergenceWarning

    d = acts.shape[1]
    with warnings.catch_warnings(record=True) as caught:  # few rows (smoke runs): FastICA may stop before converging
        warnings.simplefilter("always", ConvergenceWarning)
        ica = baselines.ica(acts, d, max_rows=ica_rows, seed=seed, max_iter=ica_max_iter)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.info("FastICA stopped before converging on %d rows; its unmixing is still a full basis", min(len(acts), ica_rows))
    return {"PCA": baselines.pca(acts, d, seed=seed), "ICA": ica, "random": baselines.random_directions(acts, d, seed=seed),
            "residual basis": baselines.neuron_basis(acts)}


def load_or_train(model: torch.nn.Module, layer: int, settings: dict[str, dict], folder_of: Callable[[str], Path],
                  train: bool, train_acts: Float[Tensor, "n_train d_in"], eval_acts: Float[Tensor, "n_eval d_in"],
                  d_sae: int, cfg: DictionaryTrainConfig, metadata: dict | None = None) -> dict[str, tuple[object, str]]:
    """An SAE of each architecture in ``settings`` (``{"topk": {"k": 16}}``) at ``blocks.{layer}.hook_resid_pre``:
    loaded from ``folder_of(arch)`` when ``train`` is False and it is there, else trained
    (``frontier.train_and_measure``), saved there and loaded back (so it is the same inference class as a saved one).
    Returns ``{arch: (sae, "loaded" | "trained")}``."""
    from workbench.analysis import frontier
    from workbench.dictionaries import load_dictionary, save_dictionary

    hook = hooks.resid_pre(layer)
    out: dict[str, tuple[object, str]] = {}
    for arch, setting in settings.items():
        folder = Path(folder_of(arch))
        if not train and (folder / "cfg.json").exists():
            out[arch] = (load_dictionary(folder, model=model), "loaded")
            continue
        arch_cfg = replace(cfg, resample_encoder_scale=1.0) if arch.startswith("topk") else cfg  # as notebook 03
        point = frontier.train_and_measure(arch, setting, train_acts, eval_acts, d_sae, arch_cfg)
        save_dictionary(point.dictionary, folder, hook_name=hook, model=model,
                        metadata={"setting": setting, "metrics": point.metrics, "train_config": asdict(arch_cfg)}
                        | (metadata or {}))
        out[arch] = (load_dictionary(folder, model=model), "trained")
    return out


NOTEBOOK_03_ARCHITECTURES = ("standard", "gated", "gated_paper", "topk")
"""The SAEs notebook 03 saves at the middle layer (``data/dictionaries/resid_pre_{layer}_{arch}``)."""


def sae_dictionaries(model: torch.nn.Module, layers: Sequence[int], saved_root: Path, out_root: Path, train: bool,
                     train_acts: dict[int, Tensor], eval_acts: dict[int, Tensor], settings: dict[str, dict], d_sae: int,
                     cfg: DictionaryTrainConfig, metadata: dict | None = None
                     ) -> tuple[dict[int, dict[str, object]], dict[int, dict[str, str]]]:
    """The SAEs notebook 05 patches with, as ``{layer: {"SAE (arch)": sae}}`` and how each was had, ``{layer: {arch:
    "loaded from notebook 03" | "loaded" | "trained"}}``.

    At ``layers[0]``: every architecture of :data:`NOTEBOOK_03_ARCHITECTURES` that notebook 03 saved under
    ``saved_root`` (never retrained, never overwritten here); if it saved none yet, the ``settings`` SAEs are trained
    into a temporary folder. At the other layers: the ``settings`` SAEs loaded from or trained into ``out_root``
    (:func:`load_or_train`, ``train`` as there). ``train_acts`` / ``eval_acts`` are the activations by layer."""
    import tempfile

    from workbench.analysis import sweep_report
    from workbench.dictionaries import load_dictionary

    saes: dict[int, dict[str, object]] = {}
    how: dict[int, dict[str, str]] = {}
    for i, layer in enumerate(layers):
        saved = {a: sweep_report.saved_dictionary_dir(saved_root, layer, a) for a in NOTEBOOK_03_ARCHITECTURES}
        found = {a: f for a, f in saved.items() if (f / "cfg.json").exists()} if i == 0 else {}
        if found:
            made = {a: (load_dictionary(f, model=model), "loaded from notebook 03") for a, f in found.items()}
        else:
            root = Path(tempfile.mkdtemp()) if i == 0 else Path(out_root)
            made = load_or_train(model, layer, settings, lambda a, root=root, layer=layer:
                                 sweep_report.saved_dictionary_dir(root, layer, a), train or i == 0,
                                 train_acts[layer], eval_acts[layer], d_sae, cfg, metadata)
        saes[layer] = {f"SAE ({a})": sae for a, (sae, _) in made.items()}
        how[layer] = {a: h for a, (_, h) in made.items()}
    return saes, how


def comparisons(results: Sequence[SearchResult], kl_target: float) -> dict[str, dict[str, Comparison]]:
    """Each SAE's frontier (name starting with ``"SAE"``) against PCA's and ICA's: ``{sae: {"PCA": ..., "ICA": ...}}``."""
    by_name = {r.name: r for r in results}
    return {r.name: {b: compare(r, by_name[b], kl_target) for b in ("PCA", "ICA") if b in by_name}
            for r in results if r.name.startswith("SAE")}


def frontier_table(results: Sequence[SearchResult], kl_target: float) -> pd.DataFrame:
    """One row per method: features visited, KL with all of them patched, features and edit magnitude needed to reach
    ``kl_target``, and the search's cost."""
    rows = [{"method": r.name, "features (candidates)": f"{len(r.candidates)} of {r.d_sae}",
             "KL, all patched": r.start["kl"], "features at target KL": r.features_needed_at(kl_target),
             "edit magnitude at target KL": r.edit_magnitude_at(kl_target),
             "search seconds": None if r.cost is None else r.cost.seconds} for r in results]
    return _rounded(pd.DataFrame(rows, dtype=object).set_index("method"))


def _rounded(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy().astype(object)
    for column in out.columns:
        out[column] = [("not reached" if v is None or (isinstance(v, float) and np.isnan(v)) else
                        round(v, 3) + 0.0 if isinstance(v, float) else v) for v in table[column]]  # no "-0.0"
    return out


def top_features(result: SearchResult, problem: FeaturePatchingProblem, batch: PromptBatch, kl_target: float,
                 k: int = 5) -> pd.DataFrame:
    """The ``k`` features that stayed patched longest among those still patched at the last point whose KL is at most
    ``kl_target`` (the set that carries the effect), with the tau that un-patched them and where their codes change."""
    _, kl, _ = result.points()
    reached = [i - 1 for i in range(1, len(kl)) if kl[i] <= kl_target]
    index = reached[-1] if reached else -1
    features = (result.patched_at(index) if index >= 0 else result.ranked_features())[:k]
    tau_of = dict(zip(result.candidates, result.unpatched_at, strict=True))
    rows = [{"feature": f, "un-patched at tau": result.taus[tau_of[f]] if tau_of[f] < len(result.taus) else None,
             **{f"share at {role}": share for role, share in feature_positions(problem, batch, f).items()}}
            for f in features]
    return pd.DataFrame(rows)


@torch.no_grad()
def mode_speed(model: torch.nn.Module, problem: FeaturePatchingProblem, rows: int = 64, repeats: int = 2) -> dict:
    """Seconds per prompt evaluation when running from the patched layer on and when running the whole model with a
    hook, on the same ``rows`` residuals."""
    prompt = torch.arange(rows) % problem.tokens.shape[0]
    resid = problem.clean_resid[prompt]
    out = {}
    for mode in MODES:
        evaluate = _Evaluator(model, problem, mode)
        evaluate(resid, prompt)  # warm up
        started = time.perf_counter()
        for _ in range(repeats):
            evaluate(resid, prompt)
        out[mode] = (time.perf_counter() - started) / (repeats * rows)
    return out | {"speedup": out["hooks"] / out["from_layer"]}


def results_metrics(searches: dict[tuple[int, str], SearchResult], kl_targets: dict[int, float]) -> dict:
    """The JSON's frontier part: per layer and method the frontier arrays, ``features_needed_at_kl`` and
    ``edit_magnitude_at_kl`` (at the layer's target KL), ``sae_beats_pca`` / ``sae_beats_ica`` per SAE (its frontier
    dominates theirs in edit magnitude), every comparison, and each search's cost."""
    layers = sorted({layer for layer, _ in searches})
    out: dict = {"layers": layers, "kl_target": {}, "frontiers": {}, "features_needed_at_kl": {},
                 "edit_magnitude_at_kl": {}, "sae_beats_pca": {}, "sae_beats_ica": {}, "comparisons": {}, "cost": {}}
    for layer in layers:
        key, target = str(layer), kl_targets[layer]
        found = [r for (l_, _), r in searches.items() if l_ == layer]
        compared = comparisons(found, target)
        out["kl_target"][key] = target
        out["frontiers"][key] = {r.name: r.to_dict() for r in found}
        out["features_needed_at_kl"][key] = {r.name: r.features_needed_at(target) for r in found}
        out["edit_magnitude_at_kl"][key] = {r.name: r.edit_magnitude_at(target) for r in found}
        out["sae_beats_pca"][key] = {s: c["PCA"].dominates for s, c in compared.items() if "PCA" in c}
        out["sae_beats_ica"][key] = {s: c["ICA"].dominates for s, c in compared.items() if "ICA" in c}
        out["comparisons"][key] = {s: {b: c.to_dict() for b, c in cs.items()} for s, cs in compared.items()}
        out["cost"][key] = {r.name: None if r.cost is None else r.cost.to_dict() for r in found}
    return out


def record_claims(results, metrics: dict, sae: str = "SAE (standard)") -> None:
    """Paper claims per layer: ``sae``'s features and edit magnitude at the target KL divided by PCA's and ICA's
    (target < 1), and whether its frontier dominates theirs (the paper: yes against PCA; it did not run ICA)."""
    for key in metrics["features_needed_at_kl"]:
        needed, edits = metrics["features_needed_at_kl"][key], metrics["edit_magnitude_at_kl"][key]
        for base, paper in (("PCA", "fewer features, smaller edits (Pythia-410M)"), ("ICA", "not run (PCA only)")):
            if sae not in needed or base not in needed:
                continue
            for what, values in (("features", needed), ("edit magnitude", edits)):
                ratio = (values[sae] / values[base] if values[sae] is not None and values[base] else
                         "target KL not reached")
                results.claim(f"layer {key}: {sae} {what} / {base}'s at half the clean KL", ratio, paper, "< 1")
            beats = metrics[f"sae_beats_{base.lower()}"][key].get(sae)
            results.claim(f"layer {key}: {sae} frontier dominates {base}'s in edit magnitude",
                          "yes" if beats else "no", "yes" if base == "PCA" else "not run", "yes")


def layer_verdict(metrics: dict, layer: int, sae: str = "SAE (standard)") -> dict:
    """What a note about one layer's frontiers reads from :func:`results_metrics`: the target KL, ``sae``'s, PCA's and
    ICA's features and edit magnitude there (text: "not reached" when a method never gets that close), and whether
    ``sae``'s frontier dominates PCA's and ICA's; and, for every SAE of the layer, the same verdicts in one line
    (``every_sae``) and how many dominate each (``k_pca``, ``k_ica`` of ``k``)."""
    key = str(layer)
    needed, edit = metrics["features_needed_at_kl"][key], metrics["edit_magnitude_at_kl"][key]
    beats_pca, beats_ica = metrics["sae_beats_pca"][key], metrics["sae_beats_ica"][key]
    saes = sorted(set(beats_pca) | set(beats_ica))
    yes = lambda flag: "yes" if flag else "no"  # noqa: E731
    compared = metrics["comparisons"][key].get(sae, {})
    return {"layer": layer, "target": metrics["kl_target"][key], "sae": sae,
            **{f"n_{m.lower()}": _fmt(needed.get(name), "d") for m, name in (("SAE", sae), ("PCA", "PCA"), ("ICA", "ICA"))},
            **{f"e_{m.lower()}": _fmt(edit.get(name), ".2f") for m, name in (("SAE", sae), ("PCA", "PCA"), ("ICA", "ICA"))},
            "pca": "dominates" if beats_pca.get(sae) else "does not dominate",
            "ica": "dominates" if beats_ica.get(sae) else "does not dominate",
            "share": compared["PCA"]["share_lower"] if "PCA" in compared else float("nan"),
            "every_sae": "; ".join(f"{s}: PCA {yes(beats_pca.get(s))}, ICA {yes(beats_ica.get(s))} " + (
                "(never reaches the target KL)" if needed.get(s) is None else
                f"({needed[s]} features, edit {edit[s]:.2f})") for s in saes),
            "k": len(saes), "k_pca": sum(bool(beats_pca.get(s)) for s in saes),
            "k_ica": sum(bool(beats_ica.get(s)) for s in saes)}


def _fmt(value, spec: str) -> str:
    """A number for a note, or "not reached" for None (a method that never gets that close)."""
    return "not reached" if value is None else format(value, spec)


def where_features_sit(table: pd.DataFrame, maps: patching.PositionMaps, layer: int) -> dict:
    """For a note: the top features' mean share of code change at the IO name and the final position (``io``,
    ``fin``), residual patching's effect there before ``layer`` (``rio``, ``rfin``), and the larger of each pair
    (``f``: where the features sit, ``r``: where the name is), and whether they are the same position (``agree``:
    "the same position" or "different positions")."""
    io_pos = next(i for i, t in enumerate(maps.labels) if t.endswith("(IO)"))
    fin_pos = len(maps.labels) - 1
    io = float(table["share at IO"].mean()) if len(table) else float("nan")
    fin = float(table["share at final"].mean()) if len(table) else float("nan")
    rio, rfin = float(maps.residual[layer, io_pos]), float(maps.residual[layer, fin_pos])
    f, r = "IO" if io >= fin else "final", "IO" if rio >= rfin else "final"
    return {"io": io, "fin": fin, "rio": rio, "rfin": rfin, "f": f, "r": r,
            "agree": "the same position" if f == r else "different positions"}


@dataclass
class ShortcutCheck:
    """The paper's search (every decision measured) beside the banded one, on one problem and the same taus."""

    exact: SearchResult
    banded: SearchResult
    kl_target: float

    @property
    def agreement(self) -> float:
        """Share of the candidates both searches un-patch at the same tau (or both never)."""
        a, b = np.array(self.exact.unpatched_at), np.array(self.banded.unpatched_at)
        return float((a == b).mean()) if len(a) else 1.0

    def to_dict(self) -> dict:
        e, b, t = self.exact, self.banded, self.kl_target
        return {"method": e.name, "layer": e.layer, "taus": e.taus, "band": b.cost.band if b.cost else None,
                "exact_features_at_kl": e.features_needed_at(t), "banded_features_at_kl": b.features_needed_at(t),
                "exact_edit_at_kl": e.edit_magnitude_at(t), "banded_edit_at_kl": b.edit_magnitude_at(t),
                "exact_kl": e.kl, "banded_kl": b.kl, "agreement": self.agreement,
                "exact_seconds": e.cost.seconds if e.cost else None, "banded_seconds": b.cost.seconds if b.cost else None,
                "exact_decisions": e.cost.decisions if e.cost else None,
                "banded_decisions": b.cost.decisions if b.cost else None}

    def note_values(self) -> dict:
        """:meth:`to_dict`'s numbers as text for a note ("not reached" for a target KL a search never gets to)."""
        d = self.to_dict()
        return d | {k: _fmt(d[k], "d") for k in ("exact_features_at_kl", "banded_features_at_kl")} | {
            k: _fmt(d[k], ".2f") for k in ("exact_edit_at_kl", "banded_edit_at_kl")} | {"n_taus": len(d["taus"])}


def shortcut_check(model: torch.nn.Module, problem: FeaturePatchingProblem, taus: Sequence[float], band: float,
                   kl_target: float, seed: int = 0, progress: bool = True) -> ShortcutCheck:
    """What ``band`` changes: the paper's search (``band=None``) and the banded one on ``problem`` with ``taus``, the
    same seed (so the same visiting orders)."""
    exact = greedy_search(model, problem, taus=taus, band=None, seed=seed, progress=progress)
    banded = greedy_search(model, problem, taus=taus, band=band, seed=seed, progress=progress)
    return ShortcutCheck(exact, banded, kl_target)
