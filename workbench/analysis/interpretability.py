"""Explain-then-simulate interpretability (Bills et al. 2023, as Cunningham et al. 2023 use it to compare SAEs with
the neuron basis, random directions, PCA and ICA), run against the synthetic world's ground-truth token labels
instead of an LLM explainer and simulator.

The metric, fixed before running it:

- **Splits.** The tokens' *sequences* are shuffled (seeded) and split into a labelling split (``label_fraction``
  of the sequences) and a disjoint scoring split (the rest): no sequence has tokens in both.
- **Labels.** Every facet of ``features.token_labels`` (category, kind, role...) gives each token one value; a
  token the facet does not label gets that facet's value ``"other"``. A candidate explanation is one
  ``(facet, value)``; its indicator is 1 on the tokens with that value. Values whose indicator is constant on the
  labelling split cannot be explanations.
- **Features.** SAE codes (``signed=False``, must be non-negative) are features as they are. A signed code
  (``signed=True``: PCA, ICA, random directions, the neuron basis) is first centred on its labelling-split mean,
  then counts as two features, its positive part ``ReLU(c)`` and its negative part ``ReLU(-c)``. Features that
  are constant on the labelling split (for SAE codes: that never fire there) are skipped and counted
  (``n_skipped``). If ``n_features`` is given, that many of the remaining features are sampled (seeded), so that
  every method is scored on the same number; fewer remaining is an error (``score_methods`` picks the largest
  number every method has).
- **Explain.** On the labelling split, a feature's explanation is the label whose indicator has the highest
  Pearson correlation with the feature's activation; ties (within 1e-9) go to the first label in facet order, then
  in sorted value order.
- **Simulate.** The explanation alone predicts the activation: a token with the label gets the feature's mean
  activation over labelling-split tokens with the label, a token without it the mean over those without it (a
  two-valued predictor fitted on the labelling split).
- **Score.** On the scoring split, a feature's sample is its ``n_top`` top-activating tokens (by true activation)
  and ``n_random`` tokens drawn uniformly at random (with replacement, seeded, independently per feature; they may
  repeat a top token), 50 + 50 by default as in Bills et al.'s "top and random" scoring. The score is the Pearson
  correlation between predicted and true activation over that sample, 0 when either is constant on it.
- **Summary.** Per method, the mean score over the scored features and a 95% percentile-bootstrap interval of that
  mean (2,000 resamples of the features, seeded). ``sae_beats_baselines``: the SAE with the highest mean has an
  interval lying entirely above every baseline's interval.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

OTHER = "other"
"""The value a facet gives a token it does not label."""
TIE_TOLERANCE = 1e-9
"""Label correlations within this of the best are ties, broken by label order."""


@dataclass
class SimulationScores:
    """Explain-then-simulate scores of one method's features (see the module docstring for the definition)."""

    score: Float[Tensor, " n_scored"]
    """Each scored feature's simulation score: correlation of predicted and true activation on its sample."""
    feature_index: Int[Tensor, " n_scored"]
    """Which column of the codes each scored feature comes from."""
    sign: Int[Tensor, " n_scored"]
    """+1 for the code itself (or its positive part), -1 for the negative part of a signed code."""
    facet: list[str]
    """The facet of each feature's explanation."""
    label: list[str]
    """The value of each feature's explanation (``"other"``: tokens the facet does not label)."""
    explain_correlation: Float[Tensor, " n_scored"]
    """The correlation of the explanation's indicator with the activation on the labelling split."""
    n_candidates: int
    """Features before skipping and sampling (twice the number of codes when signed)."""
    n_skipped: int
    """Candidates skipped because they are constant (never fire) on the labelling split."""
    interval: tuple[float, float]
    """95% percentile-bootstrap interval of the mean score (resampling features)."""

    @property
    def mean(self) -> float:
        return float(self.score.mean()) if len(self.score) else float("nan")

    @property
    def n_scored(self) -> int:
        return len(self.score)

    @property
    def explanations(self) -> list[tuple[str, str]]:
        """Each scored feature's explanation as ``(facet, value)``."""
        return list(zip(self.facet, self.label, strict=True))


def split_by_sequence(sequence_index: Int[Tensor, " n_tokens"], label_fraction: float = 0.5,
                      seed: int = 0) -> tuple[Bool[Tensor, " n_tokens"], Bool[Tensor, " n_tokens"]]:
    """Masks of the labelling and scoring splits: whole sequences, ``label_fraction`` of them (seeded) labelling."""
    sequences = torch.unique(sequence_index)
    n_label = round(label_fraction * len(sequences))
    if not 1 <= n_label < len(sequences):
        raise ValueError(f"label_fraction={label_fraction} of {len(sequences)} sequences leaves a split empty; "
                         "pass a fraction that keeps at least one sequence on each side")
    perm = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(seed))
    label_mask = torch.isin(sequence_index, sequences[perm[:n_label]])
    return label_mask, ~label_mask


def _indicators(token_ids: Tensor, labels: Mapping[str, Mapping[int, str]]) -> tuple[Tensor, list[tuple[str, str]]]:
    """``[n_tokens, n_labels]`` bool indicator of every (facet, value), facets in order, values sorted."""
    if not labels or not all(isinstance(m, Mapping) for m in labels.values()):
        raise ValueError("labels must map facet -> {token_id: label} (as features.token_labels returns), got "
                         f"{type(labels).__name__} with values {sorted({type(m).__name__ for m in labels.values()})}")
    ids = token_ids.tolist()
    columns, names = [], []
    for facet, mapping in labels.items():
        values, inverse = np.unique(np.array([mapping.get(t, OTHER) for t in ids]), return_inverse=True)
        columns.append(torch.nn.functional.one_hot(torch.from_numpy(inverse).long(), len(values)).bool())
        names += [(facet, str(v)) for v in values]
    return torch.cat(columns, dim=1), names


def _column_stats(codes: Tensor, label_mask: Tensor, chunk_size: int) -> tuple[Tensor, Tensor, Tensor, float]:
    """Per column over the labelling split: mean, min, max; and the minimum over all tokens."""
    label_rows = label_mask.nonzero().squeeze(1)
    means, mins, maxs, overall_min = [], [], [], float("inf")
    for start in range(0, codes.shape[1], chunk_size):
        block = codes[:, start:start + chunk_size].float()
        lab = block.index_select(0, label_rows)
        means.append(lab.sum(0, dtype=torch.float64) / len(label_rows))
        mins.append(lab.amin(0))
        maxs.append(lab.amax(0))
        overall_min = min(overall_min, float(block.min()))
    return torch.cat(means), torch.cat(mins), torch.cat(maxs), overall_min


def _live_candidates(codes: Tensor, label_mask: Tensor, signed: bool,
                     chunk_size: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """The candidates that vary on the labelling split, as (column, sign), the columns' labelling-split means, and
    the number of candidates."""
    mean, lo, hi, overall_min = _column_stats(codes, label_mask, chunk_size)
    if not signed and overall_min < 0:
        raise ValueError(f"codes have negative values (min {overall_min:.3g}) but signed=False; pass signed=True "
                         "for signed directions (PCA, ICA, random, neurons), which are split into two parts")
    varies = hi > lo  # centred, a varying column has a positive and a negative part; a constant one neither
    columns = torch.arange(codes.shape[1])
    if signed:
        col = torch.cat([columns, columns])
        sign = torch.cat([torch.ones_like(columns), -torch.ones_like(columns)])
        live = torch.cat([varies, varies])
    else:
        col, sign, live = columns, torch.ones_like(columns), varies
    return col[live], sign[live], mean, len(col)


def live_feature_count(codes: Float[Tensor, "n_tokens d_sae"], sequence_index: Int[Tensor, " n_tokens"], *,
                       signed: bool, label_fraction: float = 0.5, seed: int = 0, chunk_size: int = 256) -> int:
    """How many features ``explain_then_simulate`` could score (the others never fire on the labelling split)."""
    label_mask, _ = split_by_sequence(sequence_index, label_fraction, seed)
    return len(_live_candidates(codes, label_mask, signed, chunk_size)[0])


def _bootstrap_interval(values: Tensor, n_resamples: int, seed: int, chunk: int = 200) -> tuple[float, float]:
    if len(values) == 0:
        return float("nan"), float("nan")
    gen = torch.Generator().manual_seed(seed)
    means = torch.cat([values[torch.randint(len(values), (min(chunk, n_resamples - i), len(values)), generator=gen)]
                       .double().mean(1) for i in range(0, n_resamples, chunk)])
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


def _pearson_rows(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise Pearson correlation, 0 where either row is constant."""
    xc, yc = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    sx, sy = xc.pow(2).sum(1).sqrt(), yc.pow(2).sum(1).sqrt()
    ok = (sx > 1e-12 * (1 + x.abs().amax(1))) & (sy > 1e-12 * (1 + y.abs().amax(1)))
    return torch.where(ok, (xc * yc).sum(1) / (sx * sy).clamp_min(1e-300), torch.zeros_like(sx))


@torch.no_grad()
def explain_then_simulate(codes: Float[Tensor, "n_tokens d_sae"], token_ids: Int[Tensor, " n_tokens"],
                          labels: Mapping[str, Mapping[int, str]], sequence_index: Int[Tensor, " n_tokens"], *,
                          signed: bool, n_features: int | None = None, n_top: int = 50, n_random: int = 50,
                          label_fraction: float = 0.5, seed: int = 0, n_bootstrap: int = 2000,
                          chunk_size: int = 256, progress: bool = False) -> SimulationScores:
    """Score every feature (or ``n_features`` sampled ones) of ``codes`` by explain-then-simulate against
    ground-truth ``labels`` (facet -> {token_id: value}, as ``features.token_labels`` returns); the exact
    definition is the module docstring's. ``signed``: the codes are signed directions (PCA, ICA, random, neurons)
    whose positive and negative parts are scored as two features. The same ``seed`` gives the same split for
    every method.
    """
    if not len(codes) == len(token_ids) == len(sequence_index):
        raise ValueError(f"codes ({len(codes)} rows), token_ids ({len(token_ids)}) and sequence_index "
                         f"({len(sequence_index)}) must describe the same tokens")
    label_mask, score_mask = split_by_sequence(sequence_index.cpu(), label_fraction, seed)
    label_rows, score_rows = label_mask.nonzero().squeeze(1), score_mask.nonzero().squeeze(1)
    n_lab, n_score = len(label_rows), len(score_rows)
    if n_score < max(n_top, n_random):
        raise ValueError(f"the scoring split has {n_score} tokens, fewer than n_top={n_top} or n_random={n_random}; "
                         "cache more tokens or lower them")
    indicator, label_names = _indicators(token_ids.cpu(), labels)
    ind_lab = indicator[label_mask].double()
    has_score = indicator[score_mask]
    count = ind_lab.sum(0)
    usable = (count > 0) & (count < n_lab)
    if not usable.any():
        raise ValueError(f"no label varies on the labelling split ({n_lab} tokens, labels {label_names[:5]}...)")
    p = count / n_lab
    sd_label = (p * (1 - p)).sqrt()

    codes = codes.cpu()
    col, sign, col_mean, n_candidates = _live_candidates(codes, label_mask, signed, chunk_size)
    n_live = len(col)
    if n_features is not None:
        if n_features > n_live:
            raise ValueError(f"n_features={n_features} but only {n_live} of {n_candidates} features vary on the "
                             f"labelling split; pass n_features <= {n_live} (score_methods picks the common number)")
        pick = torch.randperm(n_live, generator=torch.Generator().manual_seed(seed + 1))[:n_features].sort().values
        col, sign = col[pick], sign[pick]
    random_rows = torch.randint(n_score, (len(col), n_random), generator=torch.Generator().manual_seed(seed + 2))

    scores, corrs, best_labels = [], [], []
    starts = range(0, len(col), chunk_size)
    for start in tqdm(starts, desc="explain-then-simulate", disable=not progress):
        c, s = col[start:start + chunk_size], sign[start:start + chunk_size]
        acts = codes.index_select(1, c).float()
        if signed:
            acts = ((acts - col_mean[c].float()) * s).clamp_min(0)
        a_lab = acts.index_select(0, label_rows).double()  # [n_lab, C]
        a_score = acts.index_select(0, score_rows).T.contiguous()  # [C, n_score]
        centred = a_lab - a_lab.mean(0)
        sd_act = centred.pow(2).mean(0).sqrt()
        corr = (ind_lab.T @ centred) / n_lab / (sd_label[:, None] * sd_act[None, :])  # [n_labels, C]
        corr[~usable] = -torch.inf
        best = corr.amax(0)
        label = (corr >= best - TIE_TOLERANCE).int().argmax(0)  # the first label among ties
        sum_in = (ind_lab.T @ a_lab).gather(0, label[None]).squeeze(0)
        mu_in = sum_in / count[label]
        mu_out = (a_lab.sum(0) - sum_in) / (n_lab - count[label])
        rows = torch.cat([a_score.topk(n_top, dim=1).indices, random_rows[start:start + chunk_size]], dim=1)
        true = a_score.gather(1, rows).double()
        predicted = torch.where(has_score[rows, label[:, None]], mu_in[:, None], mu_out[:, None])
        scores.append(_pearson_rows(predicted, true))
        corrs.append(best)
        best_labels.append(label)
    score = torch.cat(scores).float() if scores else torch.zeros(0)
    label = torch.cat(best_labels).tolist() if best_labels else []
    return SimulationScores(score=score, feature_index=col, sign=sign,
                            facet=[label_names[i][0] for i in label], label=[label_names[i][1] for i in label],
                            explain_correlation=torch.cat(corrs).float() if corrs else torch.zeros(0),
                            n_candidates=n_candidates, n_skipped=n_candidates - n_live,
                            interval=_bootstrap_interval(score, n_bootstrap, seed + 3))


def score_methods(codes: Mapping[str, Float[Tensor, "n_tokens d_sae"]], token_ids: Int[Tensor, " n_tokens"],
                  labels: Mapping[str, Mapping[int, str]], sequence_index: Int[Tensor, " n_tokens"], *,
                  signed: Collection[str], n_features: int | None = None, label_fraction: float = 0.5, seed: int = 0,
                  **options) -> dict[str, SimulationScores]:
    """``explain_then_simulate`` for each method on the same split, scoring the same number of features for each:
    ``n_features``, or fewer when a method has fewer live features (then the smallest live count).

    ``signed``: the names of the methods whose codes are signed directions. ``options`` go to
    ``explain_then_simulate`` (``n_top``, ``n_random``, ``n_bootstrap``...).
    """
    unknown = set(signed) - set(codes)
    if unknown:
        raise ValueError(f"signed names {sorted(unknown)} are not among the methods {sorted(codes)}")
    live = {name: live_feature_count(c, sequence_index, signed=name in signed, label_fraction=label_fraction,
                                     seed=seed) for name, c in codes.items()}
    n = min([*live.values(), *([n_features] if n_features is not None else [])])
    return {name: explain_then_simulate(c, token_ids, labels, sequence_index, signed=name in signed, n_features=n,
                                        label_fraction=label_fraction, seed=seed, **options)
            for name, c in codes.items()}


def compare_methods(results: Mapping[str, SimulationScores]) -> pd.DataFrame:
    """One row per method: mean score, its 95% interval, features scored, skipped and candidates."""
    return pd.DataFrame({name: {"mean": r.mean, "ci_low": r.interval[0], "ci_high": r.interval[1],
                                "n_scored": r.n_scored, "n_skipped": r.n_skipped, "n_candidates": r.n_candidates}
                         for name, r in results.items()}).T.astype(
        {"n_scored": int, "n_skipped": int, "n_candidates": int})


def sae_beats_baselines(results: Mapping[str, SimulationScores], saes: Collection[str] | None = None) -> bool:
    """True when the interval of the SAE with the highest mean lies entirely above every baseline's interval.

    ``saes``: the names of the SAE methods (default: the names starting with "SAE"); every other method is a
    baseline.
    """
    saes = [n for n in results if n.startswith("SAE")] if saes is None else list(saes)
    baselines = [n for n in results if n not in saes]
    if not saes or not baselines or set(saes) - set(results):
        raise ValueError(f"need at least one SAE and one baseline among {sorted(results)}; got saes={sorted(saes)} "
                         "(pass saes= the SAE methods' names)")
    best = max(saes, key=lambda n: results[n].mean)
    return all(results[best].interval[0] > results[b].interval[1] for b in baselines)
