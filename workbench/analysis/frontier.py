"""Sparsity-reconstruction sweeps and the comparisons drawn from them (Pareto frontiers, L0 ratios)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.dictionaries import make_training_sae, metrics
from workbench.dictionaries.training import DictionaryTrainConfig, TensorSource, TrainResult, train_dictionary
from workbench.models import default_device


@dataclass
class SweepPoint:
    """One trained dictionary of a sweep and its measurements."""

    architecture: str
    setting: dict
    metrics: dict[str, float]
    train: dict = field(default_factory=dict)
    dictionary: torch.nn.Module | None = field(default=None, repr=False)
    density: Tensor | None = field(default=None, repr=False)
    """``[d_sae]`` firing frequency of each feature on the held-out activations."""

    def row(self) -> dict:
        return {"architecture": self.architecture, **{f"setting_{k}": v for k, v in self.setting.items()},
                **self.metrics, **self.train}


def train_and_measure(architecture: str, setting: dict, train_acts: Float[Tensor, "n_train d_in"],
                      eval_acts: Float[Tensor, "n_eval d_in"], d_sae: int, cfg: DictionaryTrainConfig,
                      progress: bool = False, device: str | torch.device | None = None) -> SweepPoint:
    """Train one dictionary of ``architecture`` with config fields ``setting`` and measure it on ``eval_acts``
    (and which features never fire on any of ``train_acts``: dead by the usual definition). It trains on
    ``device`` (default: CUDA when available, else CPU); the activations stay where they are and go to it a
    batch at a time."""
    torch.manual_seed(cfg.seed)
    device = default_device() if device is None else torch.device(device)
    sae = make_training_sae(architecture, d_in=train_acts.shape[1], d_sae=d_sae, device=str(device), **setting)
    result: TrainResult = train_dictionary(sae, TensorSource(train_acts, seed=cfg.seed), cfg, progress=progress)
    m = metrics.dictionary_metrics(sae, eval_acts)
    never_on_train = (metrics.feature_density(sae, train_acts) == 0).float().mean().item()
    return SweepPoint(architecture, setting, m.summary() | {"dead_fraction_on_train": never_on_train},
                      {"activations_per_s": result.activations_per_s, "wall_time_s": result.wall_time_s}, sae,
                      m.density.cpu())


def pareto_front(l0: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """Indices of points not dominated (lower L0 and higher explained variance), sorted by L0."""
    order = np.argsort(l0)
    front, best = [], -np.inf
    for i in order:
        if ev[i] > best:
            front.append(i)
            best = ev[i]
    return np.array(front, dtype=int)


def l0_ratio_at_equal_ev(test: list[SweepPoint], reference: list[SweepPoint]) -> dict[str, float | list | None]:
    """L0 of ``test`` divided by the L0 ``reference`` needs for the same explained variance.

    The reference frontier is interpolated linearly in (explained variance, log L0); only test points
    whose explained variance lies inside the reference's range count. Returns the median ratio (None when no
    point is in range) and each.
    """
    ref_l0 = np.array([p.metrics["l0"] for p in reference])
    ref_ev = np.array([p.metrics["explained_variance"] for p in reference])
    front = pareto_front(ref_l0, ref_ev)
    ev_f, log_l0_f = ref_ev[front], np.log(ref_l0[front])
    ratios = []
    for p in test:
        ev = p.metrics["explained_variance"]
        if len(front) >= 2 and ev_f[0] <= ev <= ev_f[-1]:
            ratios.append(p.metrics["l0"] / float(np.exp(np.interp(ev, ev_f, log_l0_f))))
    return {"median": float(np.median(ratios)) if ratios else None, "ratios": ratios,
            "n_points_in_range": len(ratios)}


def add_ce_loss_recovered(points: list[SweepPoint], model, hook_name: str, tokens: Tensor) -> None:
    """Measure each point's CE loss recovered by splicing (same tokens and mean activation for all)."""
    _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    act = cache[hook_name]
    mean = act[:, 1:].reshape(-1, act.shape[-1]).float().mean(0)
    for p in points:
        p.metrics |= metrics.ce_loss_recovered(model, p.dictionary, hook_name, tokens, mean_activation=mean)


def best_at_l0(points: list[SweepPoint], max_l0: float, key: str = "ce_loss_recovered_mean") -> SweepPoint | None:
    """The point with the highest ``key`` among those with L0 <= ``max_l0``."""
    ok = [p for p in points if p.metrics["l0"] <= max_l0]
    return max(ok, key=lambda p: p.metrics[key]) if ok else None
