"""Notebook 03's bookkeeping, so the notebook tells the story: tables of a sweep, the sweep a full run committed,
the saved dictionaries measured again, the Gated-vs-standard summary, and the results file.

Two paths share it. The full path (``train=True``) trains a sweep and saves the best dictionary of each kind under
``data/dictionaries/``; the fast path loads those dictionaries, measures them again, and takes the sweep itself (the
frontier, the L0 ratios, shrinkage) from the results file the full path wrote, ``results/03_sae_and_gated_sae.json``.
The fast path writes that sweep back into its own results, with the full path's wall time, so a fast run never
leaves a results file the next fast run cannot read.
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

from workbench.analysis.frontier import SweepPoint, best_at_l0, l0_ratio_at_equal_ev
from workbench.dictionaries import load_dictionary, metrics
from workbench.results import NotebookResults

NOTEBOOK = "03_sae_and_gated_sae"
REFERENCE = "standard"
"""The architecture the others' L0 at equal explained variance is divided by."""
MAX_L0 = 32
"""The sparsity budget at which the best dictionary of each kind is chosen, compared and saved."""
TRAIN_KEYS = ("activations_per_s", "wall_time_s")
"""Keys of a sweep row that describe the training run, not the dictionary."""
TABLE_COLUMNS = ("l0", "explained_variance", "ce_loss_recovered_mean", "shrinkage_gamma", "dead_fraction",
                 "dead_fraction_on_train", "dense_fraction")
"""Measurements shown in a sweep table, in order (a column no point has is left out)."""
MISSING = "—"
"""Shown in a table cell with no value (e.g. a baseline's dead fraction on the training set)."""


def saved_dictionary_dir(root: Path, layer: int, architecture: str) -> Path:
    """Where the full path saves, and the fast path loads, the best ``architecture`` dictionary of ``layer``."""
    return Path(root) / f"resid_pre_{layer}_{architecture}"


def setting_text(setting: dict) -> str:
    """``{"l1_coefficient": 2}`` -> ``"l1_coefficient=2"``: one column for every architecture's setting."""
    return ", ".join(f"{k}={v}" for k, v in setting.items())


def point_from_row(row: dict) -> SweepPoint:
    """The :class:`SweepPoint` a results row (``SweepPoint.row()``) was written from, without its dictionary."""
    setting = {k.removeprefix("setting_"): v for k, v in row.items()
               if k.startswith("setting_") and not _is_nan(v)}
    train = {k: row[k] for k in TRAIN_KEYS if k in row}
    measured = {k: v for k, v in row.items() if k != "architecture" and not k.startswith("setting_") and k not in train}
    return SweepPoint(row["architecture"], setting, measured, train)


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def sweep_table(points: list[SweepPoint]) -> pd.DataFrame:
    """One row per point: architecture, its setting as text, and the :data:`TABLE_COLUMNS` it has, rounded; a column
    no point has is dropped, and a cell with no value shows :data:`MISSING` (never NaN)."""
    rows = [{"architecture": p.architecture, "setting": setting_text(p.setting),
             **{k: p.metrics.get(k, float("nan")) for k in TABLE_COLUMNS}} for p in points]
    table = pd.DataFrame(rows, columns=["architecture", "setting", *TABLE_COLUMNS]).dropna(axis=1, how="all")
    return _fill_missing(table.round(3))


def _fill_missing(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype(object).where(table.notna(), MISSING)


@dataclass
class SavedSweep:
    """The sweep a full-path run of notebook 03 recorded in its results file."""

    points: list[SweepPoint]
    """Every trained dictionary of the sweep, with its measurements (no weights)."""
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
    as the full path measures what it trains (dead features: never firing on ``train_acts``). Its setting comes from
    its ``metadata.json``; a missing dictionary raises, naming the run that makes it."""
    points = []
    for arch in architectures:
        folder = saved_dictionary_dir(Path(root), layer, arch)
        if not (folder / "cfg.json").exists():
            raise FileNotFoundError(f"no saved {arch} dictionary at {folder}: run notebook {NOTEBOOK} with train=True "
                                    f"(`workbench reproduce --only 03`) to train and save it")
        sae = load_dictionary(folder, model=model)
        setting = json.loads((folder / "metadata.json").read_text()).get("setting", {})
        measured = metrics.dictionary_metrics(sae, eval_acts)
        dead_on_train = (metrics.feature_density(sae, train_acts) == 0).float().mean().item()
        points.append(SweepPoint(arch, setting, measured.summary() | {"dead_fraction_on_train": dead_on_train}, {},
                                 sae, measured.density.cpu()))
    return points


@dataclass
class SweepSummary:
    """What the sweep says about the architectures, beside the best dictionary of each."""

    l0_ratio: dict[str, dict]
    """Per architecture other than the reference: ``l0_ratio_at_equal_ev`` against the reference's frontier."""
    shrinkage: dict[str, float]
    """Mean shrinkage gamma over each architecture's runs."""
    best: dict[str, SweepPoint | None]
    """The best dictionary of each architecture at L0 <= :data:`MAX_L0` (by CE loss recovered), None if none."""
    dead_on_train: list[float]
    """Each run's share of features that never fire on the training activations."""


def summarise(sweep: list[SweepPoint], candidates: list[SweepPoint], pick_best: bool = True) -> SweepSummary:
    """Ratios, shrinkage and dead fractions from ``sweep`` (trained now, or recorded by a full run); the best of
    each architecture from ``candidates``: the one with the highest CE loss recovered at L0 <= :data:`MAX_L0`, or,
    with ``pick_best=False``, each candidate as it is (the saved dictionaries measured now: a full run chose them,
    and a saved L0 of 31.9 measured on other tokens as 32.2 must not drop one)."""
    archs = list(dict.fromkeys(p.architecture for p in [*sweep, *candidates]))
    by_arch = {a: [p for p in sweep if p.architecture == a] for a in archs}
    reference = by_arch.get(REFERENCE, [])
    ratios = {a: l0_ratio_at_equal_ev(ps, reference) for a, ps in by_arch.items() if a != REFERENCE and ps}
    shrinkage = {a: float(np.mean([p.metrics["shrinkage_gamma"] for p in ps])) for a, ps in by_arch.items() if ps}
    if pick_best:
        best = {a: best_at_l0([p for p in candidates if p.architecture == a], MAX_L0) for a in archs}
    else:
        best = dict.fromkeys(archs) | {p.architecture: p for p in candidates}
    return SweepSummary(ratios, shrinkage, best, [p.metrics["dead_fraction_on_train"] for p in sweep])


def comparison_table(summary: SweepSummary) -> pd.DataFrame:
    """One row per architecture: its median L0 ratio at equal explained variance (the reference shows
    "reference"), how many of its points that median rests on, mean shrinkage, and its best CE loss recovered."""
    rows = {}
    for arch, best in summary.best.items():
        ratio = summary.l0_ratio.get(arch)
        rows[arch] = {
            "L0 / standard L0 at equal EV (median)": "reference" if arch == REFERENCE else
            (MISSING if ratio is None or ratio["median"] is None else round(ratio["median"], 3)),
            "points in range": MISSING if ratio is None else ratio["n_points_in_range"],
            "mean shrinkage gamma": round(summary.shrinkage[arch], 3) if arch in summary.shrinkage else MISSING,
            f"best CE recovered at L0 <= {MAX_L0}": round(best.metrics["ce_loss_recovered_mean"], 3) if best
            else f"no run at L0 <= {MAX_L0}",
        }
    return _fill_missing(pd.DataFrame.from_dict(rows, orient="index", dtype=object))


def _or_text(value: float | None, text: str) -> float | str:
    return text if value is None or _is_nan(value) else value


def record_results(results: NotebookResults, *, train: bool, hook: str, d_sae: int, n_train: int, n_eval: int,
                   sweep: list[SweepPoint], baselines: list[SweepPoint], summary: SweepSummary, scores: dict[str, dict],
                   case_study_feature: int, saved_sweep: SavedSweep | None = None) -> None:
    """Fill ``results`` with notebook 03's metrics and paper claims. ``train``: the sweep is this run's, and so is
    its wall time; else it is ``saved_sweep``'s (None: no sweep, so no ratio, shrinkage or dead-fraction claims)."""
    best = summary.best
    results.metrics = {
        "path": "train" if train else "fast (saved dictionaries)", "hook": hook, "d_sae": d_sae,
        "n_train_activations": n_train, "n_eval_activations": n_eval,
        "sweep_source": "this run" if train else (str(saved_sweep.path.name) if saved_sweep else "none"),
        "sweep_wall_time_s": round(time.perf_counter() - results.started, 1) if train else
        (saved_sweep.wall_time_s if saved_sweep else None),
        "runs": [p.row() for p in sweep], "baselines": [p.row() for p in baselines],
        "gated_l0_ratio_at_equal_fvu": {a: r["median"] for a, r in summary.l0_ratio.items()},
        f"best_ce_loss_recovered_at_l0_le_{MAX_L0}": {a: b.metrics["ce_loss_recovered_mean"] if b else None
                                                      for a, b in best.items()},
        "dead_fraction": {f"{p.architecture} {p.setting}": p.metrics["dead_fraction_on_train"] for p in sweep},
        "dead_fraction_held_out": {f"{p.architecture} {p.setting}": p.metrics["dead_fraction"] for p in sweep},
        "shrinkage_gamma": summary.shrinkage,
        "interpretability_score": {k: v["feature purity"] for k, v in scores.items()},
        "explanation_purity": {k: v["explanation purity"] for k, v in scores.items()},
        "case_study_feature": case_study_feature,
    }
    for arch, label in [("gated_paper", "Gated (paper loss)"), ("gated", "Gated (SAELens)")]:
        ratio = summary.l0_ratio.get(arch, {}).get("median")
        results.claim(f"{label} L0 / standard L0 at equal explained variance",
                      _or_text(ratio, "no point in range" if sweep else "no sweep"), 0.5, "<= 0.6")
    for arch, b in best.items():
        results.claim(f"best CE loss recovered at L0 <= {MAX_L0} ({arch})",
                      b.metrics["ce_loss_recovered_mean"] if b else f"no run at L0 <= {MAX_L0}", "—", ">= 0.9")
    if {"gated_paper", "standard"} <= summary.shrinkage.keys():
        gated = summary.shrinkage["gated_paper"]
        results.claim("shrinkage gamma, gated (paper)", gated, "~1 (no shrinkage)", "near 1")
        results.claim("shrinkage gamma, standard (below gated's)", summary.shrinkage["standard"], "< 1", f"< {gated:.4g}")
    if summary.dead_on_train:
        dead = summary.dead_on_train
        results.claim("max dead fraction over runs (never fire on the training activations)", max(dead), "—", "<= 0.1")
        results.claim("share of runs with dead fraction <= 0.1", sum(v <= 0.1 for v in dead) / len(dead), "—", ">= 1")
    for key, what in [("feature purity", "per-feature purity (chance-corrected)"),
                      ("explanation purity", "explanation purity")]:
        results.claim(f"interpretability, {what}: best SAE minus best baseline", purity_margin(scores, key),
                      "SAE more interpretable than PCA/ICA/random/neurons", "> 0")


def purity_margin(scores: dict[str, dict], key: str) -> float:
    """Best score ``key`` among the SAEs (names starting "SAE") minus the best among the other methods."""
    sae = [v[key] for k, v in scores.items() if k.startswith("SAE")]
    other = [v[key] for k, v in scores.items() if not k.startswith("SAE")]
    if not sae or not other:
        raise ValueError(f"need SAE and baseline scores to compare, got {sorted(scores)}")
    return max(sae) - max(other)
