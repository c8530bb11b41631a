"""Notebook 03's bookkeeping: tables without NaN, the committed sweep read back, the summary, the results file."""

import json
import math

import matplotlib.pyplot as plt
import pytest
import torch

from workbench import hooks, viz
from workbench.analysis import sweep_report
from workbench.analysis.frontier import SweepPoint
from workbench.dictionaries import make_training_sae, save_dictionary
from workbench.paths import project_root
from workbench.results import NotebookResults


def _point(arch, setting, l0, ev, ce=0.9, gamma=0.9, dead=0.0, **extra):
    measured = {"l0": l0, "explained_variance": ev, "ce_loss_recovered_mean": ce, "shrinkage_gamma": gamma,
                "dead_fraction": dead, "dense_fraction": 0.0} | extra
    return SweepPoint(arch, setting, measured, {"wall_time_s": 1.0, "activations_per_s": 10.0})


def _sweep():
    """A standard frontier, a Gated one needing half its L0 at every explained variance, and one TopK point."""
    standard = [_point("standard", {"l1_coefficient": c}, l0, ev, gamma=0.8, dead_fraction_on_train=0.0)
                for c, l0, ev in [(1, 64, 0.95), (2, 32, 0.9), (4, 16, 0.8)]]
    gated = [_point("gated_paper", {"l1_coefficient": c}, l0, ev, gamma=1.0, dead_fraction_on_train=0.2)
             for c, l0, ev in [(1, 32, 0.95), (2, 16, 0.9)]]
    topk = [_point("topk", {"k": 16}, 16, 0.85, ce=0.95, dead_fraction_on_train=0.05)]
    return standard + gated + topk


def _baselines():
    return [SweepPoint(name, {"n_components": k}, {"l0": k, "explained_variance": ev, "ce_loss_recovered_mean": ev,
                                                   "shrinkage_gamma": 1.0, "dead_fraction": 0.0, "dense_fraction": 1.0})
            for k, ev in [(8, 0.5), (32, 0.86)] for name in ("PCA", "ICA")]


def test_rows_round_trip_through_a_results_file():
    for p in _sweep() + _baselines():
        back = sweep_report.point_from_row(json.loads(json.dumps(p.row())))
        assert (back.architecture, back.setting, back.metrics, back.train) == (p.architecture, p.setting, p.metrics,
                                                                               p.train)


def test_a_sweep_table_has_one_setting_column_and_no_nan():
    table = sweep_report.sweep_table(_sweep() + _baselines())
    assert not any(c.startswith("setting_") for c in table.columns) and "setting" in table.columns
    assert table.loc[0, "setting"] == "l1_coefficient=1" and table.loc[len(table) - 1, "setting"] == "n_components=32"
    assert not table.isna().any().any()
    assert (table["dead_fraction_on_train"] == sweep_report.MISSING).sum() == len(_baselines())  # baselines have none
    no_ce = [SweepPoint("PCA", {"n_components": 8}, {"l0": 8.0, "explained_variance": 0.5})]
    assert "ce_loss_recovered_mean" not in sweep_report.sweep_table(no_ce).columns  # a column no point has is dropped


def test_the_summary_finds_the_l0_ratio_shrinkage_and_best_runs():
    summary = sweep_report.summarise(_sweep(), _sweep())
    assert summary.l0_ratio["gated_paper"]["median"] == pytest.approx(0.5)
    assert summary.l0_ratio["topk"]["n_points_in_range"] == 1
    assert summary.shrinkage["standard"] == pytest.approx(0.8) and summary.shrinkage["gated_paper"] == 1.0
    assert summary.best["standard"].metrics["l0"] == 32  # L0 <= 32 only
    table = sweep_report.comparison_table(summary)
    assert table.loc["standard", "L0 / standard L0 at equal EV (median)"] == "reference"
    assert not table.isna().any().any()
    assert table.loc["gated_paper", "points in range"] == 2 and isinstance(table.loc["gated_paper", "points in range"], int)


def test_the_fast_path_summary_takes_the_saved_dictionaries_as_the_best():
    saved = [_point("standard", {"l1_coefficient": 2}, 30, 0.91, ce=0.97, dead_fraction_on_train=0.0),
             _point("topk", {"k": 32}, 32.2, 0.97, ce=0.99, dead_fraction_on_train=0.0)]  # saved at L0 31.9
    summary = sweep_report.summarise(_sweep(), saved, pick_best=False)
    assert summary.best["standard"].metrics["ce_loss_recovered_mean"] == 0.97
    assert summary.best["topk"].metrics["l0"] == 32.2  # kept although measured just above the budget
    assert sweep_report.summarise(_sweep(), saved).best["topk"] is None  # picking would have dropped it
    assert summary.best["gated_paper"] is None  # no saved gated dictionary among the candidates
    assert summary.l0_ratio["gated_paper"]["median"] == pytest.approx(0.5)  # the ratios still come from the sweep


def test_load_sweep_reads_what_a_full_path_run_wrote(tmp_path):
    assert sweep_report.load_sweep(tmp_path / "missing.json") is None
    results = NotebookResults(sweep_report.NOTEBOOK, "full")
    results.metrics = {"runs": [p.row() for p in _sweep()], "baselines": [p.row() for p in _baselines()]}
    saved = sweep_report.load_sweep(results.write(tmp_path))
    assert len(saved.points) == len(_sweep()) and len(saved.baselines) == 4 and saved.scale == "full"
    assert saved.points[0].setting == {"l1_coefficient": 1} and saved.wall_time_s >= 0
    results.metrics = {"runs": [], "baselines": []}
    assert sweep_report.load_sweep(results.write(tmp_path)) is None


def _scores():
    return {"SAE (standard)": {"feature purity": 0.8, "explanation purity": 0.7},
            "PCA": {"feature purity": 0.9, "explanation purity": 0.1}}


def _record(results, train, sweep, saved_sweep=None):
    summary = sweep_report.summarise(sweep, sweep or _sweep())
    sweep_report.record_results(results, train=train, hook="blocks.3.hook_resid_pre", d_sae=64, n_train=10, n_eval=5,
                                sweep=sweep, baselines=_baselines(), summary=summary, scores=_scores(),
                                case_study_feature=3, saved_sweep=saved_sweep)


def test_the_fast_path_writes_the_sweep_back_with_the_full_paths_wall_time(tmp_path):
    full = NotebookResults(sweep_report.NOTEBOOK, "full")
    _record(full, train=True, sweep=_sweep())
    full.metrics["sweep_wall_time_s"] = 1800.0
    committed = sweep_report.load_sweep(full.write(tmp_path / "committed"))
    fast = NotebookResults(sweep_report.NOTEBOOK, "full")
    _record(fast, train=False, sweep=committed.points, saved_sweep=committed)
    again = sweep_report.load_sweep(fast.write(tmp_path / "fast"))
    assert again.wall_time_s == 1800.0 and len(again.points) == len(committed.points)
    claims = {c.claim: c for c in fast.claims}
    assert claims["Gated (paper loss) L0 / standard L0 at equal explained variance"].ours == pytest.approx(0.5)
    assert claims["shrinkage gamma, standard (below gated's)"].met is True  # 0.8 < 1.0
    assert claims["interpretability, explanation purity: best SAE minus best baseline"].ours == pytest.approx(0.6)


def test_results_without_a_sweep_hold_text_not_nan(tmp_path):
    results = NotebookResults(sweep_report.NOTEBOOK, "smoke")
    _record(results, train=False, sweep=[])
    payload = json.loads(results.write(tmp_path).read_text())
    for claim in payload["claims"]:
        assert isinstance(claim["ours"], str) or math.isfinite(claim["ours"]), claim
    ratio = next(c for c in payload["claims"] if c["claim"].startswith("Gated (paper loss)"))
    assert ratio["ours"] == "no sweep" and payload["metrics"]["sweep_source"] == "none"


def test_measure_saved_loads_and_measures_each_dictionary(tiny_bridge, tiny_tokens, tmp_path):
    d = tiny_bridge.cfg.d_model
    sae = make_training_sae("standard", d_in=d, d_sae=64)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)  # features fire at initialisation
    folder = sweep_report.saved_dictionary_dir(tmp_path, 1, "standard")
    save_dictionary(sae, folder, hook_name=hooks.resid_pre(1), model=tiny_bridge, metadata={"setting": {"l1_coefficient": 2}})
    _, cache = tiny_bridge.run_with_cache(tiny_tokens, names_filter=[hooks.resid_pre(1)])
    acts = cache[hooks.resid_pre(1)].reshape(-1, d)
    (point,) = sweep_report.measure_saved(tmp_path, 1, ["standard"], tiny_bridge, acts, acts)
    assert point.setting == {"l1_coefficient": 2} and point.metrics["l0"] > 0 and point.density.shape == (64,)
    assert point.metrics["dead_fraction_on_train"] == point.metrics["dead_fraction"]  # same activations here
    with pytest.raises(FileNotFoundError, match="train=True"):
        sweep_report.measure_saved(tmp_path, 1, ["gated"], tiny_bridge, acts, acts)


def test_the_frontier_draws_pca_apart_from_ica_and_stars_the_highlighted_points():
    sweep = _sweep()
    fig = viz.plot_frontiers(sweep, _baselines(), highlight=sweep[:1], highlight_label="saved")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["PCA"].get_linestyle() != lines["ICA"].get_linestyle()
    assert lines["PCA"].get_marker() != lines["ICA"].get_marker()
    assert lines["PCA"].get_zorder() > lines["ICA"].get_zorder()  # drawn over the line it coincides with
    assert lines["saved"].get_marker() == "*"
    plt.close(fig)


def test_the_committed_results_file_holds_a_sweep_the_fast_path_can_read():
    saved = sweep_report.load_sweep(project_root() / "results" / f"{sweep_report.NOTEBOOK}.json")
    assert saved is not None and saved.scale == "full" and saved.wall_time_s > 0
    assert {"standard", "gated", "gated_paper", "topk"} <= {p.architecture for p in saved.points}
