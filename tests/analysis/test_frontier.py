"""Frontiers by hand: the Pareto front, the L0 ratio at equal explained variance or CE loss recovered (seeds pooled),
values at matched L0 (per seed, then over seeds), picking on the selection set, and training at a given seed."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from workbench.analysis import frontier
from workbench.analysis.frontier import CE, EV, SweepPoint
from workbench.dictionaries.training import DictionaryTrainConfig


def pt(arch, l0, ev, ce=None, seed=0, setting=None, selection=None):
    measured = {"l0": l0, EV: ev} | ({} if ce is None else {CE: ce})
    return SweepPoint(arch, setting or {"l1_coefficient": l0}, measured, seed=seed, selection_metrics=selection or {})


def test_the_pareto_front_keeps_the_best_of_equal_l0s_and_drops_dominated_points():
    assert frontier.pareto_front(np.array([10, 10, 20]), np.array([0.5, 0.7, 0.6])).tolist() == [1]
    assert frontier.pareto_front(np.array([20, 10, 20]), np.array([0.6, 0.5, 0.8])).tolist() == [1, 2]
    assert frontier.pareto_front(np.array([40, 10, 20]), np.array([0.9, 0.5, 0.7])).tolist() == [1, 2, 0]


def _reference():
    """Seed 0: (10, 0.8), (40, 0.9); seed 1: (20, 0.8), dominated, and (80, 0.95): the front is 10-40-80."""
    return [pt("s", 10, 0.8, seed=0), pt("s", 40, 0.9, seed=0), pt("s", 20, 0.8, seed=1), pt("s", 80, 0.95, seed=1)]


def test_the_l0_ratio_interpolates_the_reference_front_of_every_seed_in_log_l0():
    test = [pt("g", 5, 0.85, seed=0), pt("g", 20, 0.925, seed=1), pt("g", 2, 0.7, seed=0), pt("g", 100, 0.99, seed=1)]
    r = frontier.l0_ratio_at_equal(EV, test, _reference())
    # 0.85 is halfway from 0.8 to 0.9: the reference needs sqrt(10 * 40) = 20, so 5 / 20; 0.925: sqrt(40 * 80)
    assert [p.ratio for p in r.points[:2]] == pytest.approx([0.25, 20 / math.sqrt(40 * 80)])
    assert r.points[2].ratio is None and r.points[3].ratio is None  # below and above the front's range
    assert r.median == pytest.approx((0.25 + 20 / math.sqrt(3200)) / 2)
    assert (r.n_in_range, r.n_out_of_range) == (2, 2)
    assert r.reference_range == (0.8, 0.95) and r.covered_range == (0.85, 0.925)
    p = r.points[1]
    assert (p.architecture, p.setting, p.seed, p.l0, p.value) == ("g", {"l1_coefficient": 20}, 1, 20, 0.925)


def test_the_l0_ratio_at_equal_ce_reads_the_ce_loss_recovered():
    reference = [pt("s", 10, 0.5, ce=0.8), pt("s", 40, 0.6, ce=0.9)]
    r = frontier.l0_ratio_at_equal(CE, [pt("g", 5, 0.99, ce=0.85)], reference)  # its EV is out of range, its CE not
    assert r.median == pytest.approx(0.25) and r.metric == CE
    assert frontier.l0_ratio_at_equal(EV, [pt("g", 5, 0.99, ce=0.85)], reference).median is None
    with pytest.raises(ValueError, match="add_ce_loss_recovered"):
        frontier.l0_ratio_at_equal(CE, [pt("g", 5, 0.9)], reference)


def test_the_l0_ratio_has_no_range_without_two_reference_points():
    r = frontier.l0_ratio_at_equal(EV, [pt("g", 5, 0.8)], [pt("s", 10, 0.8)])
    assert r.median is None and r.reference_range is None and r.covered_range is None and r.n_out_of_range == 1


def test_the_old_name_still_gives_the_ratio_at_equal_explained_variance():
    old = frontier.l0_ratio_at_equal_ev([pt("g", 5, 0.85)], _reference())
    assert old["median"] == pytest.approx(0.25) and old["ratios"] == [pytest.approx(0.25)]
    assert old["n_points_in_range"] == 1 and old["points"][0]["seed"] == 0


def test_a_value_at_l0_is_interpolated_along_the_front_in_log_l0():
    points = [pt("a", 8, 0.8), pt("a", 32, 0.9), pt("a", 16, 0.7)]  # (16, 0.7) is dominated
    assert frontier.value_at_l0(points, EV, 16) == pytest.approx(0.85)
    assert frontier.value_at_l0(points, EV, 32) == pytest.approx(0.9)
    assert frontier.value_at_l0(points, EV, 64) is None and frontier.value_at_l0(points, EV, 4) is None


def test_matched_l0_goes_seed_by_seed_then_over_seeds():
    points = [pt("a", 8, 0.8, ce=0.9, seed=0), pt("a", 32, 0.9, ce=0.95, seed=0),
              pt("a", 8, 0.7, ce=0.9, seed=1), pt("a", 16, 0.9, ce=0.99, seed=1), pt("b", 16, 0.5, ce=0.5)]
    matched = {(m.architecture, m.metric, m.l0): m for m in frontier.matched_l0(points, (16, 32))}
    at16 = matched["a", EV, 16]
    assert at16.per_seed == {0: pytest.approx(0.85), 1: pytest.approx(0.9)}
    assert (at16.mean, at16.min, at16.max) == (pytest.approx(0.875), pytest.approx(0.85), pytest.approx(0.9))
    at32 = matched["a", EV, 32]
    assert at32.per_seed == {0: pytest.approx(0.9), 1: None} and at32.mean == pytest.approx(0.9)
    assert at32.n_seeds_in_range == 1 and at32.to_dict()["per_seed"] == {"0": pytest.approx(0.9), "1": None}
    assert matched["a", CE, 16].mean == pytest.approx((0.925 + 0.99) / 2)
    assert matched["b", EV, 16].mean == 0.5 and matched["b", EV, 32].mean is None  # one point: only its own L0
    assert [m.architecture for m in frontier.matched_l0(points)][:4] == ["a"] * 4


def test_the_best_is_picked_on_the_selection_set():
    a = pt("s", 20, 0.9, ce=0.99, selection={"l0": 20, CE: 0.80})
    b = pt("s", 30, 0.9, ce=0.90, selection={"l0": 30, CE: 0.95})
    c = pt("s", 31, 0.9, ce=0.99, selection={"l0": 33, CE: 0.99})  # above the budget on the selection set
    assert frontier.best_at_l0([a, b, c], 32) is b
    assert frontier.best_at_l0([pt("s", 20, 0.9, ce=0.9), pt("s", 10, 0.8, ce=0.95)], 32).metrics["l0"] == 10
    assert frontier.best_at_l0([c], 32) is None
    with pytest.raises(ValueError, match="selection_tokens"):
        frontier.best_at_l0([pt("s", 20, 0.9, selection={"l0": 20})], 32)


def test_a_point_writes_its_seed_and_selection_metrics_into_its_row():
    row = pt("s", 20, 0.9, seed=2, selection={"l0": 21.0}).row()
    assert row["seed"] == 2 and row["selection_l0"] == 21.0 and row["setting_l1_coefficient"] == 20
    assert pt("s", 20, 0.9, seed=2).describe() == "s (l1_coefficient=20, seed 2)"


def test_train_and_measure_trains_at_the_seed_given_and_measures_the_selection_set():
    g = torch.Generator().manual_seed(0)
    acts, selection = torch.randn(512, 8, generator=g), torch.randn(256, 8, generator=g)
    cfg = DictionaryTrainConfig(n_steps=4, batch_size=64, log_every=2, normalize_activations=False)
    a = frontier.train_and_measure("standard", {"l1_coefficient": 1.0}, acts, acts[:128], 16, cfg, device="cpu",
                                   seed=3, selection_acts=selection)
    again = frontier.train_and_measure("standard", {"l1_coefficient": 1.0}, acts, acts[:128], 16,
                                       dataclasses.replace(cfg, seed=3), device="cpu")
    other = frontier.train_and_measure("standard", {"l1_coefficient": 1.0}, acts, acts[:128], 16, cfg, device="cpu",
                                       seed=4)
    assert a.seed == 3 and again.seed == 3 and other.seed == 4 and cfg.seed == 0
    assert torch.equal(a.dictionary.W_dec, again.dictionary.W_dec), "seed=3 is not cfg.seed=3"
    assert not torch.equal(a.dictionary.W_dec, other.dictionary.W_dec)
    assert set(a.selection_metrics) >= {"l0", EV} and again.selection_metrics == {}
    assert a.selection_metrics[EV] != a.metrics[EV]  # measured on other activations
    with pytest.raises(ValueError, match="pass seed=1 to train_and_measure"):
        frontier.train_and_measure("standard", {"seed": 1}, acts, acts, 16, cfg, device="cpu")


def test_ce_loss_recovered_goes_to_the_report_and_the_selection_set(tiny_bridge, tiny_tokens):
    from workbench import hooks
    from workbench.dictionaries import make_training_sae

    sae = make_training_sae("standard", d_in=tiny_bridge.cfg.d_model, d_sae=32)
    p = SweepPoint("standard", {}, {"l0": 1.0}, dictionary=sae)
    frontier.add_ce_loss_recovered([p], tiny_bridge, hooks.resid_pre(1), tiny_tokens[:3], tiny_tokens[3:])
    assert CE in p.metrics and CE in p.selection_metrics
    assert p.metrics["ce_loss_clean"] != p.selection_metrics["ce_loss_clean"]  # other tokens
    q = SweepPoint("standard", {}, {"l0": 1.0}, dictionary=sae)
    frontier.add_ce_loss_recovered([q], tiny_bridge, hooks.resid_pre(1), tiny_tokens[:3])
    assert q.selection_metrics == {} and q.metrics[CE] == pytest.approx(p.metrics[CE])
