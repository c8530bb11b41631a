"""Notebook 03's bookkeeping, so the notebook tells the story: tables of a sweep, the sweep a full run committed,
the saved dictionaries measured again, the Gated-vs-standard summary, and the results file.

Two paths share it. The full path (``train=True``) trains a sweep (each setting at one or more seeds) and saves the
best dictionary of each kind under ``data/dictionaries/``, picked on a selection set and reported on a separate
report set; the fast path loads those dictionaries, measures them again, and takes the sweep itself (the frontier,
the L0 ratios, matched-L0 values, shrinkage) from the results file the full path wrote,
``results/03_sae_and_gated_sae.json``. The fast path writes that sweep back into its own results, with the full
path's wall time, so a fast run never leaves a results file the next fast run cannot read.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.analysis.frontier import (
    CE,
    EV,
    L0Ratio,
    MatchedL0,
    RunValue,
    SweepPoint,
    best_at_l0,
    l0_ratio_at_equal,
    matched_l0,
    run_values,
)
from workbench.dictionaries import load_dictionary, metrics
from workbench.results import NotebookResults

NOTEBOOK = "03_sae_and_gated_sae"
REFERENCE = "standard"
"""The architecture the others' L0 at equal explained variance (or CE loss recovered) is divided by."""
RATIO_MEASURES = {EV: "explained variance", CE: "CE loss recovered"}
"""The measures the L0 ratio and the matched-L0 comparison are taken at, and their names in words."""
SHORT = {EV: "EV", CE: "CE recovered"}
"""Their names in table headers."""
MATCHED_L0S = (16, 32)
"""The L0s at which each architecture's measures are interpolated and compared."""
MAX_L0 = 32
"""The sparsity budget under which the dictionary of each kind to save is picked (on the selection set)."""
DEAD_AIM = 0.1
"""The most dead features a run should have (share of features never firing on the training activations)..."""
DEAD_MIN_L0 = 8
"""...when its L0 is at least this (sparser runs are allowed more)."""
TRAIN_KEYS = ("activations_per_s", "wall_time_s")
"""Keys of a sweep row that describe the training run, not the dictionary."""
TABLE_COLUMNS = ("l0", "explained_variance", "ce_loss_recovered_mean", "shrinkage_gamma", "dead_fraction",
                 "dead_fraction_on_train", "dense_fraction")
"""Measurements shown in a sweep table, in order (a column no point has is left out)."""
MISSING = "—"
"""Shown in a table cell with no value (e.g. a baseline's dead fraction on the training set)."""
GATED = {"gated_paper": "Gated (paper loss)", "gated": "Gated (SAELens)"}
"""The architectures whose L0 ratio is a paper claim, and their names in the claims."""


def saved_dictionary_dir(root: Path, layer: int, architecture: str) -> Path:
    """Where the full path saves, and the fast path loads, the best ``architecture`` dictionary of ``layer``."""
    return Path(root) / f"resid_pre_{layer}_{architecture}"


def setting_text(setting: dict) -> str:
    """``{"l1_coefficient": 2}`` -> ``"l1_coefficient=2"``: one column for every architecture's setting."""
    return ", ".join(f"{k}={v}" for k, v in setting.items())


def point_from_row(row: dict) -> SweepPoint:
    """The :class:`SweepPoint` a results row (``SweepPoint.row()``) was written from, without its dictionary. A row
    without a seed (written before sweeps had seeds) ran at ``DictionaryTrainConfig``'s default seed, 0."""
    setting = {k.removeprefix("setting_"): v for k, v in row.items()
               if k.startswith("setting_") and not _is_nan(v)}
    selection = {k.removeprefix("selection_"): v for k, v in row.items() if k.startswith("selection_")}
    train = {k: row[k] for k in TRAIN_KEYS if k in row}
    measured = {k: v for k, v in row.items() if k not in ("architecture", "seed")
                and not k.startswith(("setting_", "selection_")) and k not in train}
    return SweepPoint(row["architecture"], setting, measured, train, seed=int(row.get("seed", 0)),
                      selection_metrics=selection)


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def sweep_table(points: list[SweepPoint]) -> pd.DataFrame:
    """One row per point (per seed): architecture, its setting as text, its seed, and the :data:`TABLE_COLUMNS` it
    has (on the report set), rounded; a column no point has is dropped, and a cell with no value shows
    :data:`MISSING` (never NaN)."""
    rows = [{"architecture": p.architecture, "setting": setting_text(p.setting), "seed": p.seed,
             **{k: p.metrics.get(k, float("nan")) for k in TABLE_COLUMNS}} for p in points]
    table = pd.DataFrame(rows, columns=["architecture", "setting", "seed", *TABLE_COLUMNS]).dropna(axis=1, how="all")
    return _fill_missing(table.round(3))


def _fill_missing(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype(object).where(table.notna(), MISSING)


@dataclass
class SavedSweep:
    """The sweep a full-path run of notebook 03 recorded in its results file."""

    points: list[SweepPoint]
    """Every trained dictionary of the sweep (every seed), with its measurements (no weights)."""
    baselines: list[SweepPoint]
    """PCA and ICA at each number of components, as measured in that run."""
    wall_time_s: float
    """How long that run's full path took."""
    scale: str
    """The scale it ran at."""
    path: Path
    """The results file."""


def load_sweep(path: str | Path) -> SavedSweep | None:
    """The sweep recorded in a notebook 03 results file, or None when there is no file or it records no runs."""
    path = Path(path)
    if not path.exists():
        return None
    payload = json.loads(path.read_text())
    recorded = payload.get("metrics", {})
    if not recorded.get("runs"):
        return None
    wall = recorded.get("sweep_wall_time_s", payload.get("wall_time_s"))
    return SavedSweep([point_from_row(r) for r in recorded["runs"]],
                      [point_from_row(r) for r in recorded.get("baselines", [])], float(wall), payload["scale"], path)


@torch.no_grad()
def measure_saved(root: str | Path, layer: int, architectures: list[str], model: torch.nn.Module,
                  train_acts: Float[Tensor, "n_train d_in"], eval_acts: Float[Tensor, "n_eval d_in"]) -> list[SweepPoint]:
    """Load the saved dictionary of each architecture (``saved_dictionary_dir``) and measure it on ``eval_acts`` now,
    as the full path measures what it trains (dead features: never firing on ``train_acts``). Its setting and seed
    come from its ``metadata.json`` (the seed from ``seed`` or ``train_config.seed``, else 0); a missing dictionary
    raises, naming the run that makes it."""
    points = []
    for arch in architectures:
        folder = saved_dictionary_dir(Path(root), layer, arch)
        if not (folder / "cfg.json").exists():
            raise FileNotFoundError(f"no saved {arch} dictionary at {folder}: run notebook {NOTEBOOK} with train=True "
                                    f"(`workbench reproduce --only 03`) to train and save it")
        sae = load_dictionary(folder, model=model)
        meta = json.loads((folder / "metadata.json").read_text())
        seed = int(meta.get("seed", meta.get("train_config", {}).get("seed", 0)))
        measured = metrics.dictionary_metrics(sae, eval_acts)
        dead_on_train = (metrics.feature_density(sae, train_acts) == 0).float().mean().item()
        points.append(SweepPoint(arch, meta.get("setting", {}), measured.summary() |
                                 {"dead_fraction_on_train": dead_on_train}, {}, sae, measured.density.cpu(), seed=seed))
    return points


@dataclass
class SweepSummary:
    """What the sweep says about the architectures, beside the dictionary of each kind to keep."""

    ratios: dict[str, dict[str, L0Ratio]]
    """``ratios[measure][architecture]``: :func:`~workbench.analysis.frontier.l0_ratio_at_equal` against the
    reference's frontier (all seeds pooled), for each of :data:`RATIO_MEASURES` and each architecture but the
    reference."""
    matched: list[MatchedL0]
    """Each architecture's :data:`RATIO_MEASURES` at each of :data:`MATCHED_L0S`, per seed and over seeds."""
    shrinkage_per_run: dict[str, list[RunValue]]
    """Each run's shrinkage gamma (report set), per architecture, one entry per run (setting and seed) in sweep
    order: per-run values, not a mean (:attr:`mean_shrinkage` has the means)."""
    best: dict[str, SweepPoint | None]
    """The dictionary of each architecture to keep: the highest CE loss recovered at L0 <= :data:`MAX_L0`, both on
    the selection set (None if no run qualifies); its ``metrics`` are on the report set."""
    picked_on: str
    """Which measurements ``best`` was picked on: "selection set", "report set" (the points had no selection
    measurements), "mixed", or "saved by a full run"."""
    dead_on_train: list[RunValue]
    """Each run's share of features that never fire on the training activations."""

    @property
    def mean_shrinkage(self) -> dict[str, float]:
        """Mean shrinkage gamma over each architecture's runs (non-finite values left out)."""
        return {a: float(np.mean(v)) for a, rs in self.shrinkage_per_run.items() if (v := _finite(rs))}

    def matched_value(self, architecture: str, measure: str, l0: float) -> MatchedL0 | None:
        """The entry of :attr:`matched` for ``architecture``, ``measure`` and ``l0``; None when there is none."""
        return next((m for m in self.matched if (m.architecture, m.metric, m.l0) == (architecture, measure, l0)), None)


def _finite(runs: list[RunValue]) -> list[float]:
    return [r.value for r in runs if math.isfinite(r.value)]


def summarise(sweep: list[SweepPoint], candidates: list[SweepPoint], pick_best: bool = True) -> SweepSummary:
    """Ratios, matched-L0 values, shrinkage and dead fractions from ``sweep`` (trained now, or recorded by a full run;
    every seed); the dictionary of each architecture to keep from ``candidates``: the one with the highest CE loss
    recovered at L0 <= :data:`MAX_L0` on the selection set (``selection_metrics``; a point without them is picked on
    its ``metrics``), or, with ``pick_best=False``, each candidate as it is (the saved dictionaries measured now: a
    full run chose them, and a saved L0 of 31.9 measured on other tokens as 32.2 must not drop one)."""
    archs = list(dict.fromkeys(p.architecture for p in [*sweep, *candidates]))
    by_arch = {a: [p for p in sweep if p.architecture == a] for a in archs}
    reference = by_arch.get(REFERENCE, [])
    ratios = {m: {a: l0_ratio_at_equal(m, ps, reference) for a, ps in by_arch.items() if a != REFERENCE and ps}
              for m in RATIO_MEASURES}
    shrinkage = {a: run_values(ps, "shrinkage_gamma") for a, ps in by_arch.items() if ps}
    if pick_best:
        best = {a: best_at_l0([p for p in candidates if p.architecture == a], MAX_L0) for a in archs}
        with_selection = {bool(p.selection_metrics) for p in candidates}
        picked_on = ("mixed" if len(with_selection) > 1 else
                     "selection set" if with_selection == {True} else "report set")
    else:
        best = dict.fromkeys(archs) | {p.architecture: p for p in candidates}
        picked_on = "saved by a full run"
    return SweepSummary(ratios, matched_l0(sweep, MATCHED_L0S, tuple(RATIO_MEASURES)), shrinkage, best, picked_on,
                        run_values(sweep, "dead_fraction_on_train"))


def _spread(m: MatchedL0 | None) -> str:
    """``"0.955 [0.951, 0.960]"``: mean and range over seeds (the mean alone for one seed), and how many seeds
    are in range when not all are."""
    if m is None:
        return MISSING
    if m.mean is None:
        return "out of range"
    text = f"{m.mean:.3f}" if len(m.per_seed) == 1 else f"{m.mean:.3f} [{m.min:.3f}, {m.max:.3f}]"
    return text if m.n_seeds_in_range == len(m.per_seed) else f"{text} ({m.n_seeds_in_range} of {len(m.per_seed)} seeds)"


def comparison_table(summary: SweepSummary) -> pd.DataFrame:
    """One row per architecture: its median L0 ratio at equal explained variance and at equal CE loss recovered
    (the reference shows "reference") with how many of its points were in and out of the reference's range; its
    explained variance and CE loss recovered at each matched L0 (mean [min, max] over seeds); its shrinkage gamma
    over its runs (min to max; each run's is in the sweep table); and how many of its runs with L0 >=
    :data:`DEAD_MIN_L0` have more than :data:`DEAD_AIM` dead features."""
    rows = {}
    for arch in summary.best:
        row = {}
        for measure, short in SHORT.items():
            ratio = summary.ratios.get(measure, {}).get(arch)
            row[f"L0 / {REFERENCE} L0 at equal {short} (median)"] = "reference" if arch == REFERENCE else (
                MISSING if ratio is None or ratio.median is None else round(ratio.median, 3))
            row[f"points in / out of range ({short})"] = (
                MISSING if ratio is None else f"{ratio.n_in_range} / {ratio.n_out_of_range}")
        for measure, short in SHORT.items():
            for l0 in MATCHED_L0S:
                row[f"{short} at L0={l0}"] = _spread(summary.matched_value(arch, measure, l0))
        gammas = _finite(summary.shrinkage_per_run.get(arch, []))
        row["shrinkage gamma (runs)"] = (MISSING if not gammas else f"{gammas[0]:.3f}" if len(gammas) == 1 else
                                         f"{min(gammas):.3f} to {max(gammas):.3f} ({len(gammas)} runs)")
        dead = [r for r in summary.dead_on_train if r.architecture == arch and r.l0 >= DEAD_MIN_L0
                and math.isfinite(r.value)]
        row[f"dead > {DEAD_AIM} (runs with L0 >= {DEAD_MIN_L0})"] = (
            MISSING if not dead else f"{sum(r.value > DEAD_AIM for r in dead)} of {len(dead)}")
        rows[arch] = row
    return _fill_missing(pd.DataFrame.from_dict(rows, orient="index", dtype=object))


def ratio_table(summary: SweepSummary) -> pd.DataFrame:
    """Every point of the L0 ratios, one row per run of each architecture but the reference: its setting, seed, L0,
    and for each of :data:`RATIO_MEASURES` its value and its L0 ratio (:data:`MISSING` when out of range)."""
    rows = []
    for arch, by_ev in summary.ratios.get(EV, {}).items():
        by_ce = summary.ratios.get(CE, {}).get(arch)
        for i, p in enumerate(by_ev.points):
            row = {"architecture": arch, "setting": setting_text(p.setting), "seed": p.seed, "l0": round(p.l0, 3)}
            for measure, ratio in [(EV, by_ev), (CE, by_ce)]:
                q = ratio.points[i] if ratio is not None else None
                row[SHORT[measure]] = MISSING if q is None else round(q.value, 3)
                row[f"L0 ratio at equal {SHORT[measure]}"] = MISSING if q is None or q.ratio is None else round(q.ratio, 3)
            rows.append(row)
    return _fill_missing(pd.DataFrame(rows))


def matched_l0_table(summary: SweepSummary) -> pd.DataFrame:
    """One row per architecture, measure and matched L0: the mean, min and max over seeds and how many seeds
    reach that L0 (:data:`MISSING` where none does)."""
    rows = [{"architecture": m.architecture, "measure": SHORT.get(m.metric, m.metric), "L0": m.l0, "mean": m.mean,
             "min": m.min, "max": m.max, "seeds in range": f"{m.n_seeds_in_range} of {len(m.per_seed)}"}
            for m in summary.matched]
    columns = ["architecture", "measure", "L0", "mean", "min", "max", "seeds in range"]
    return _fill_missing(pd.DataFrame(rows, columns=columns).round(3))


def _or_text(value: float | None, text: str) -> float | str:
    return text if value is None or _is_nan(value) else value


def _run_record(r: RunValue, **values) -> dict:
    return {"architecture": r.architecture, "setting": r.setting, "seed": r.seed, "l0": r.l0} | values


def _dead_record(p: SweepPoint) -> dict:
    """A run's dead fractions (never firing on the training activations, and on the report set) and whether it meets
    the aim (<= :data:`DEAD_AIM`, which applies at L0 >= :data:`DEAD_MIN_L0`; None below)."""
    dead, applies = p.metrics.get("dead_fraction_on_train", float("nan")), p.metrics["l0"] >= DEAD_MIN_L0
    return {"architecture": p.architecture, "setting": p.setting, "seed": p.seed, "l0": p.metrics["l0"],
            "dead_fraction_on_train": dead, "dead_fraction_held_out": p.metrics.get("dead_fraction", float("nan")),
            "aim": f"<= {DEAD_AIM}" if applies else f"none (L0 < {DEAD_MIN_L0})",
            "meets_aim": bool(dead <= DEAD_AIM) if applies else None}


def record_results(results: NotebookResults, *, train: bool, hook: str, d_sae: int, n_train: int, n_eval: int,
                   sweep: list[SweepPoint], baselines: list[SweepPoint], summary: SweepSummary,
                   interpretability: pd.DataFrame, sae_beats_baselines: bool, case_study_feature: int,
                   saved_sweep: SavedSweep | None = None, n_selection: int | None = None) -> None:
    """Fill ``results`` with notebook 03's metrics and paper claims. ``train``: the sweep is this run's, and so is
    its wall time; else it is ``saved_sweep``'s (None: no sweep, so no ratio, matched-L0, shrinkage or dead-fraction
    claims). ``n_selection``: how many activations the kept dictionaries were picked on (None: no separate set).

    Metrics: every run (per seed) and baseline as a row; the L0 ratios at equal explained variance and at equal CE
    loss recovered, each with its per-point values, points in and out of range and ranges; the matched-L0 table;
    each run's dead fraction (training and report set) against the aim, and each run's shrinkage gamma; the kept
    dictionaries and what they were picked on."""
    results.metrics = {
        "path": "train" if train else "fast (saved dictionaries)", "hook": hook, "d_sae": d_sae,
        "n_train_activations": n_train, "n_eval_activations": n_eval, "n_selection_activations": n_selection,
        "sweep_source": "this run" if train else (str(saved_sweep.path.name) if saved_sweep else "none"),
        "sweep_wall_time_s": round(time.perf_counter() - results.started, 1) if train else
        (saved_sweep.wall_time_s if saved_sweep else None),
        "seeds": sorted({p.seed for p in sweep}),
        "runs": [p.row() for p in sweep], "baselines": [p.row() for p in baselines],
        "l0_ratio_median": {m: {a: r.median for a, r in by.items()} for m, by in summary.ratios.items()},
        "l0_ratio": {m: {a: r.to_dict() for a, r in by.items()} for m, by in summary.ratios.items()},
        "matched_l0": [m.to_dict() for m in summary.matched],
        "dead_fraction_per_run": [_dead_record(p) for p in sweep],
        "shrinkage_gamma_per_run": {a: [_run_record(r, shrinkage_gamma=r.value) for r in rs]
                                    for a, rs in summary.shrinkage_per_run.items()},
        "shrinkage_gamma_mean": summary.mean_shrinkage,
        "kept_dictionaries": {a: None if b is None else {"setting": b.setting, "seed": b.seed, "report": b.metrics,
                                                         "selection": b.selection_metrics}
                              for a, b in summary.best.items()},
        "kept_picked_on": f"{summary.picked_on} (highest {CE} at L0 <= {MAX_L0})",
        "interpretability_protocol": "explain then simulate (workbench.analysis.interpretability): mean Pearson "
                                     "correlation over features, 95% bootstrap interval",
        "interpretability_score": {name: {k: (int(v) if k.startswith("n_") else float(v)) for k, v in row.items()}
                                   for name, row in interpretability.to_dict(orient="index").items()},
        "sae_beats_baselines": bool(sae_beats_baselines),
        "case_study_feature": case_study_feature,
    }
    for arch, label in GATED.items():
        for measure, words in RATIO_MEASURES.items():
            ratio = summary.ratios.get(measure, {}).get(arch)
            missing = ("no sweep" if not sweep else f"no {arch} run" if ratio is None else
                       f"no point in range ({ratio.n_out_of_range} out of range)")
            results.claim(f"{label} L0 / standard L0 at equal {words}", _or_text(None if ratio is None else ratio.median, missing),
                          0.5, "<= 0.6")
    for m in summary.matched:
        if m.metric == CE and m.l0 == MAX_L0:
            results.claim(f"CE loss recovered at L0 = {m.l0} ({m.architecture}, mean over seeds)",
                          _or_text(m.mean, f"L0 = {m.l0} outside its runs' range"), "—", ">= 0.9")
    gated, standard = (_finite(summary.shrinkage_per_run.get(a, [])) for a in ("gated_paper", "standard"))
    if gated and standard:
        results.claim("shrinkage gamma, gated (paper): its run furthest from 1", max(gated, key=lambda g: abs(g - 1)),
                      "~1 (no shrinkage)", "near 1")
        results.claim("shrinkage gamma, standard: mean over its runs (below gated (paper)'s mean)",
                      float(np.mean(standard)), "< 1", f"< {np.mean(gated):.4g}")
    dead = [r.value for r in summary.dead_on_train if r.l0 >= DEAD_MIN_L0 and math.isfinite(r.value)]
    if dead:
        results.claim(f"max dead fraction over runs with L0 >= {DEAD_MIN_L0} (never fire on the training activations)",
                      max(dead), "—", f"<= {DEAD_AIM}")
        results.claim(f"share of runs with L0 >= {DEAD_MIN_L0} whose dead fraction is <= {DEAD_AIM}",
                      sum(v <= DEAD_AIM for v in dead) / len(dead), "—", ">= 1")
    saes = interpretability[interpretability.index.str.startswith("SAE")]
    others = interpretability[~interpretability.index.str.startswith("SAE")]
    if len(saes) and len(others):  # > 0 exactly when the best SAE's interval lies above every baseline's
        margin = float(saes.loc[saes["mean"].idxmax(), "ci_low"] - others["ci_high"].max())
        results.claim("interpretability (explain then simulate): best SAE's 95% interval low end minus the highest "
                      "baseline's high end", margin, "SAE above PCA, ICA, random, neurons", "> 0")
