"""Sparsity-reconstruction sweeps and the comparisons drawn from them: Pareto frontiers, the L0 one architecture
needs against another's at equal explained variance or equal CE loss recovered, and each architecture's
measurements at matched L0.

A sweep trains each setting at one or more seeds; every comparison pools the seeds' points (a frontier is the
Pareto front of all of them) or goes seed by seed and then reports the mean and the spread over seeds.

A point carries two sets of measurements: ``metrics``, on the *report* set (every number a table, figure or
results file shows), and ``selection_metrics``, on a separate *selection* set, used only to pick which dictionary
of a kind to keep (:func:`best_at_l0`), so the reported numbers of the kept one are not inflated by the choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.dictionaries import make_training_sae, metrics
from workbench.dictionaries.training import DictionaryTrainConfig, TensorSource, TrainResult, train_dictionary
from workbench.models import default_device

EV = "explained_variance"
CE = "ce_loss_recovered_mean"
"""The two measures the architectures are compared at: reconstruction, and faithfulness when spliced in."""


@dataclass
class SweepPoint:
    """One trained dictionary of a sweep and its measurements."""

    architecture: str
    setting: dict
    """The architecture's config fields this run set (e.g. ``{"l1_coefficient": 2}``); the seed is ``seed``."""
    metrics: dict[str, float]
    """Measurements on the report set: what tables, figures and results files show."""
    train: dict = field(default_factory=dict)
    """How the training ran (throughput, wall time)."""
    dictionary: torch.nn.Module | None = field(default=None, repr=False)
    density: Tensor | None = field(default=None, repr=False)
    """``[d_sae]`` firing frequency of each feature on the report set."""
    seed: int = 0
    """The run's seed (``DictionaryTrainConfig.seed``: initialisation, batch order, resampling)."""
    selection_metrics: dict[str, float] = field(default_factory=dict)
    """Measurements on the selection set, used only to pick the dictionary to keep (empty: not measured)."""

    def row(self) -> dict:
        """A flat record for a results file: ``setting_<field>`` and ``selection_<metric>`` keys beside the report
        metrics (``workbench.analysis.sweep_report.point_from_row`` reads it back)."""
        return {"architecture": self.architecture, "seed": self.seed,
                **{f"setting_{k}": v for k, v in self.setting.items()}, **self.metrics,
                **{f"selection_{k}": v for k, v in self.selection_metrics.items()}, **self.train}

    def describe(self) -> str:
        """``"standard (l1_coefficient=2, seed 1)"``: names the run in messages and results."""
        return f"{self.architecture} ({', '.join([*(f'{k}={v}' for k, v in self.setting.items()), f'seed {self.seed}'])})"


SPARSE_TRAINING_CLASS = {"standard": "standard_sparse", "standard_tied": "standard_tied_sparse",
                         "gated": "gated_sparse", "gated_paper": "gated_paper_sparse", "topk": "topk_sparse"}
"""The training class with sparse steps for each architecture: the same maths (tested to 1e-5 against SAELens's
dense class), faster once the codes are sparse; it saves as the plain architecture."""


DEAD_SAMPLE = 2**17
"""How many training activations (the first) a feature must never fire on to count as dead: enough to see a
feature of density 1e-4 about thirteen times, at a quarter of the cost of encoding a full-scale training set."""


def train_and_measure(architecture: str, setting: dict, train_acts: Float[Tensor, "n_train d_in"],
                      eval_acts: Float[Tensor, "n_eval d_in"], d_sae: int, cfg: DictionaryTrainConfig,
                      progress: bool = False, device: str | torch.device | None = None, seed: int | None = None,
                      selection_acts: Float[Tensor, "n_select d_in"] | None = None,
                      sparse_steps: bool = True) -> SweepPoint:
    """Train one dictionary of ``architecture`` with config fields ``setting`` and measure it on ``eval_acts`` (the
    report set), on ``selection_acts`` too when given (the selection set, for picking), and which features never
    fire on the first :data:`DEAD_SAMPLE` of ``train_acts`` (dead by the usual definition). ``seed`` (default ``cfg.seed``) replaces
    ``cfg.seed``: it seeds the initialisation, the batch order and resampling, so one setting can be trained at
    several seeds. It trains on ``device`` (default: CUDA when available, else CPU); the activations stay where they
    are and go to it a batch at a time. ``sparse_steps``: train with :data:`SPARSE_TRAINING_CLASS`'s class where
    there is one (the point keeps the plain architecture's name)."""
    if "seed" in setting:
        raise ValueError(f"setting {setting} holds a seed: pass seed={setting['seed']} to train_and_measure instead "
                         "(the setting holds the architecture's config fields)")
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    torch.manual_seed(cfg.seed)
    device = default_device() if device is None else torch.device(device)
    training_class = SPARSE_TRAINING_CLASS.get(architecture, architecture) if sparse_steps else architecture
    sae = make_training_sae(training_class, d_in=train_acts.shape[1], d_sae=d_sae, device=str(device), **setting)
    result: TrainResult = train_dictionary(sae, TensorSource(train_acts, seed=cfg.seed), cfg, progress=progress)
    m = metrics.dictionary_metrics(sae, eval_acts)
    never_on_train = (metrics.feature_density(sae, train_acts[:DEAD_SAMPLE]) == 0).float().mean().item()
    selection = {} if selection_acts is None else metrics.dictionary_metrics(sae, selection_acts).summary()
    return SweepPoint(architecture, dict(setting), m.summary() | {"dead_fraction_on_train": never_on_train},
                      {"activations_per_s": result.activations_per_s, "wall_time_s": result.wall_time_s}, sae,
                      m.density.cpu(), seed=cfg.seed, selection_metrics=selection)


def add_ce_loss_recovered(points: list[SweepPoint], model, hook_name: str, tokens: Tensor,
                          selection_tokens: Tensor | None = None) -> None:
    """Measure each point's CE loss recovered by splicing on ``tokens`` into its ``metrics`` (the report set), and on
    ``selection_tokens`` into its ``selection_metrics`` when given; each set ablates to its own mean activation."""
    for toks, into in [(tokens, "metrics"), (selection_tokens, "selection_metrics")]:
        if toks is None:
            continue
        _, cache = model.run_with_cache(toks, names_filter=[hook_name])
        act = cache[hook_name]
        mean = act[:, 1:].reshape(-1, act.shape[-1]).float().mean(0)
        reference = metrics.reference_losses(model, hook_name, toks, mean)  # once for every point
        for p in points:
            getattr(p, into).update(metrics.ce_loss_recovered(model, p.dictionary, hook_name, toks,
                                                              mean_activation=mean, reference=reference))


def pareto_front(l0: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of points not dominated (lower L0 and higher ``value``, e.g. explained variance), sorted by L0: along
    the front L0 and value both strictly increase."""
    l0, value = np.asarray(l0, dtype=float), np.asarray(value, dtype=float)
    order = np.lexsort((-value, l0))  # by L0, and of equal L0s the best first
    front, best = [], -np.inf
    for i in order:
        if value[i] > best:
            front.append(i)
            best = value[i]
    return np.array(front, dtype=int)


def _values(points: list[SweepPoint], metric: str, what: str) -> np.ndarray:
    missing = [p.describe() for p in points if metric not in p.metrics]
    if missing:
        hint = " (measure it with add_ce_loss_recovered)" if metric.startswith("ce_loss") else ""
        raise ValueError(f"{what} points have no {metric!r}: {missing}{hint}")
    return np.array([p.metrics[metric] for p in points], dtype=float)


@dataclass(frozen=True)
class RunValue:
    """One run's value of some measurement, with what identifies the run."""

    architecture: str
    setting: dict
    seed: int
    l0: float
    """The run's L0 on the report set."""
    value: float


@dataclass(frozen=True)
class RatioPoint(RunValue):
    """A test point of :func:`l0_ratio_at_equal`: ``value`` is its metric, ``ratio`` its L0 over the reference's."""

    ratio: float | None
    """None when ``value`` lies outside the reference frontier's range."""


def run_values(points: list[SweepPoint], key: str) -> list[RunValue]:
    """Each point's ``metrics[key]`` (nan when it has none), in the points' order."""
    return [RunValue(p.architecture, p.setting, p.seed, p.metrics["l0"], p.metrics.get(key, float("nan")))
            for p in points]


@dataclass
class L0Ratio:
    """How much L0 one architecture needs against a reference at equal ``metric`` (see :func:`l0_ratio_at_equal`)."""

    metric: str
    median: float | None
    """Median ratio over the points in range; None when none is."""
    points: list[RatioPoint]
    """Every test point, in range (with its ratio) or not (ratio None)."""
    n_in_range: int
    n_out_of_range: int
    reference_range: tuple[float, float] | None
    """The range of ``metric`` the reference frontier spans, where it is interpolated (None: fewer than two
    frontier points, so nowhere)."""
    covered_range: tuple[float, float] | None
    """The range of ``metric`` the test points in range cover (None: no point in range)."""

    @property
    def ratios(self) -> list[float]:
        return [p.ratio for p in self.points if p.ratio is not None]

    def to_dict(self) -> dict:
        """JSON-ready, with the keys of the old ``l0_ratio_at_equal_ev`` (``ratios``, ``n_points_in_range``)."""
        return {"metric": self.metric, "median": self.median, "n_points_in_range": self.n_in_range,
                "n_points_out_of_range": self.n_out_of_range, "ratios": self.ratios,
                "reference_range": None if self.reference_range is None else list(self.reference_range),
                "covered_range": None if self.covered_range is None else list(self.covered_range),
                "points": [dataclasses.asdict(p) for p in self.points]}


def l0_ratio_at_equal(metric: str, test: list[SweepPoint], reference: list[SweepPoint]) -> L0Ratio:
    """L0 of each ``test`` point divided by the L0 ``reference`` needs for the same ``metric`` (higher is better:
    explained variance, CE loss recovered).

    The reference frontier is the Pareto front of all its points (every seed's), interpolated linearly in
    (``metric``, log L0); a test point counts only when its ``metric`` lies inside the frontier's range. Returns the
    median over those, each point's ratio, how many points were in and out of range, and the ranges of ``metric``
    the frontier spans and the points in range cover.
    """
    values = _values(test, metric, "test")
    ref_l0, ref_value = _values(reference, "l0", "reference"), _values(reference, metric, "reference")
    ok = (ref_l0 > 0) & np.isfinite(ref_value)
    front = pareto_front(ref_l0[ok], ref_value[ok])
    value_f, log_l0_f = ref_value[ok][front], np.log(ref_l0[ok][front])
    span = (float(value_f[0]), float(value_f[-1])) if len(front) >= 2 else None
    points = []
    for p, v in zip(test, values, strict=True):
        inside = span is not None and span[0] <= v <= span[1]
        ratio = p.metrics["l0"] / float(np.exp(np.interp(v, value_f, log_l0_f))) if inside else None
        points.append(RatioPoint(p.architecture, p.setting, p.seed, p.metrics["l0"], float(v), ratio))
    ratios = [p.ratio for p in points if p.ratio is not None]
    covered = [p.value for p in points if p.ratio is not None]
    return L0Ratio(metric, float(np.median(ratios)) if ratios else None, points, len(ratios),
                   len(points) - len(ratios), span, (min(covered), max(covered)) if covered else None)


def l0_ratio_at_equal_ev(test: list[SweepPoint], reference: list[SweepPoint]) -> dict:
    """:func:`l0_ratio_at_equal` at equal explained variance, as a dict (``median``, ``ratios``,
    ``n_points_in_range``, ...): the old name, kept for its callers."""
    return l0_ratio_at_equal(EV, test, reference).to_dict()


def value_at_l0(points: list[SweepPoint], metric: str, l0: float) -> float | None:
    """``metric`` at ``l0`` along the Pareto front of ``points`` (one run series, e.g. one seed's settings),
    interpolated linearly in log L0; None when ``l0`` lies outside the front's L0 range."""
    l0s, values = _values(points, "l0", "the"), _values(points, metric, "the")
    ok = (l0s > 0) & np.isfinite(values)
    front = pareto_front(l0s[ok], values[ok])
    if len(front) == 0:
        return None
    l0_f, value_f = l0s[ok][front], values[ok][front]
    if not l0_f[0] <= l0 <= l0_f[-1]:
        return None
    return float(np.interp(np.log(l0), np.log(l0_f), value_f))


@dataclass(frozen=True)
class MatchedL0:
    """One architecture's ``metric`` at L0 = ``l0``: per seed, then over seeds."""

    architecture: str
    metric: str
    l0: float
    per_seed: dict[int, float | None]
    """Each seed's value along its own frontier (None: ``l0`` outside that seed's L0 range)."""
    mean: float | None
    """Mean over the seeds in range; None when no seed is."""
    min: float | None
    max: float | None

    @property
    def n_seeds_in_range(self) -> int:
        return sum(v is not None for v in self.per_seed.values())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"per_seed": {str(s): v for s, v in self.per_seed.items()},
                                           "n_seeds_in_range": self.n_seeds_in_range}


def matched_l0(points: list[SweepPoint], l0s: tuple[float, ...] = (16, 32),
               measures: tuple[str, ...] = (EV, CE)) -> list[MatchedL0]:
    """Each architecture's ``measures`` at each of ``l0s``: along each seed's frontier (:func:`value_at_l0`), then
    the mean, min and max over the seeds in range. Ordered by architecture (as first seen), measure, L0."""
    out = []
    for arch in dict.fromkeys(p.architecture for p in points):
        ps = [p for p in points if p.architecture == arch]
        seeds = sorted({p.seed for p in ps})
        for measure in measures:
            for l0 in l0s:
                per_seed = {s: value_at_l0([p for p in ps if p.seed == s], measure, l0) for s in seeds}
                found = [v for v in per_seed.values() if v is not None]
                out.append(MatchedL0(arch, measure, l0, per_seed, float(np.mean(found)) if found else None,
                                     min(found) if found else None, max(found) if found else None))
    return out


def picking_metrics(point: SweepPoint) -> dict[str, float]:
    """The measurements a point is picked on: its ``selection_metrics``, or its ``metrics`` when it has none."""
    return point.selection_metrics or point.metrics


def best_at_l0(points: list[SweepPoint], max_l0: float, key: str = CE) -> SweepPoint | None:
    """The point with the highest ``key`` among those with L0 <= ``max_l0``, both measured on the selection set
    (:func:`picking_metrics`); None when no point qualifies."""
    for p in points:
        if key not in picking_metrics(p) or "l0" not in picking_metrics(p):
            where = "selection_metrics" if p.selection_metrics else "metrics"
            raise ValueError(f"{p.describe()} has no {key!r} or 'l0' in its {where} to be picked on; measure it "
                             "(add_ce_loss_recovered(..., selection_tokens=...) for the CE loss recovered)")
    ok = [p for p in points if picking_metrics(p)["l0"] <= max_l0]
    return max(ok, key=lambda p: picking_metrics(p)[key]) if ok else None
