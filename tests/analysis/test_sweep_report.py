"""Notebook 03's bookkeeping: tables without NaN, the committed sweep read back, the summary, the results file."""

import json
import math

import pandas as pd
import pytest
import torch

from workbench import hooks
from workbench.analysis import sweep_report
from workbench.analysis.frontier import CE, EV, SweepPoint
from workbench.dictionaries import make_training_sae, save_dictionary
from workbench.paths import project_root
from workbench.results import NotebookResults


def _point(arch, setting, l0, ev, ce=None, gamma=0.9, dead=0.0, seed=0, **extra):
    measured = {"l0": l0, "explained_variance": ev, "ce_loss_recovered_mean": ev if ce is None else ce,
                "shrinkage_gamma": gamma, "dead_fraction": dead, "dense_fraction": 0.0} | extra
    return SweepPoint(arch, setting, measured, {"wall_time_s": 1.0, "activations_per_s": 10.0}, seed=seed)


def _sweep():
    """A standard frontier, a Gated one needing half its L0 at every explained variance (and CE loss recovered,
    equal to it here), and one TopK point."""
    standard = [_point("standard", {"l1_coefficient": c}, l0, ev, gamma=g, dead_fraction_on_train=0.0)
                for c, l0, ev, g in [(1, 64, 0.95, 0.9), (2, 32, 0.9, 0.8), (4, 16, 0.8, 0.7)]]
    gated = [_point("gated_paper", {"l1_coefficient": c}, l0, ev, gamma=g, dead_fraction_on_train=0.2)
             for c, l0, ev, g in [(1, 32, 0.95, 1.0), (2, 16, 0.9, 0.98)]]
    topk = [_point("topk", {"k": 16}, 16, 0.85, ce=0.95, dead_fraction_on_train=0.05)]
    return standard + gated + topk


def _seeded_sweep():
    """``_sweep`` at seed 0, and a seed 1 whose Gated runs reconstruct a little better at the same L0s."""
    again = [_point(p.architecture, p.setting, p.metrics["l0"], p.metrics["explained_variance"] + 0.02 *
                    (p.architecture == "gated_paper"), seed=1, gamma=p.metrics["shrinkage_gamma"],
                    dead_fraction_on_train=p.metrics["dead_fraction_on_train"]) for p in _sweep()[:5]]
    return _sweep() + again


def _baselines():
    return [SweepPoint(name, {"n_components": k}, {"l0": k, "explained_variance": ev, "ce_loss_recovered_mean": ev,
                                                   "shrinkage_gamma": 1.0, "dead_fraction": 0.0, "dense_fraction": 1.0})
            for k, ev in [(8, 0.5), (32, 0.86)] for name in ("PCA", "ICA")]


def test_rows_round_trip_through_a_results_file():
    selected = _point("standard", {"l1_coefficient": 3}, 20, 0.85, seed=2)
    selected.selection_metrics = {"l0": 21.0, "ce_loss_recovered_mean": 0.8}
    for p in _seeded_sweep() + _baselines() + [selected]:
        back = sweep_report.point_from_row(json.loads(json.dumps(p.row())))
        assert (back.architecture, back.setting, back.metrics, back.train, back.seed, back.selection_metrics) == (
            p.architecture, p.setting, p.metrics, p.train, p.seed, p.selection_metrics)


def test_rows_written_before_seeds_read_as_seed_0():
    row = _sweep()[0].row()
    del row["seed"]
    assert sweep_report.point_from_row(row).seed == 0


def test_a_sweep_table_has_one_setting_column_a_seed_column_and_no_nan():
    table = sweep_report.sweep_table(_seeded_sweep() + _baselines())
    assert not any(c.startswith("setting_") for c in table.columns) and "setting" in table.columns
    assert table.loc[0, "setting"] == "l1_coefficient=1" and table.loc[len(table) - 1, "setting"] == "n_components=32"
    assert table["seed"].tolist()[:len(_seeded_sweep())] == [0] * 6 + [1] * 5  # one row per seed
    assert not table.isna().any().any()
    assert (table["dead_fraction_on_train"] == sweep_report.MISSING).sum() == len(_baselines())  # baselines have none
    assert table["shrinkage_gamma"].tolist()[:3] == [0.9, 0.8, 0.7]  # each run's
    no_ce = [SweepPoint("PCA", {"n_components": 8}, {"l0": 8.0, "explained_variance": 0.5})]
    assert "ce_loss_recovered_mean" not in sweep_report.sweep_table(no_ce).columns  # a column no point has is dropped


def test_the_summary_finds_the_l0_ratios_matched_values_shrinkage_and_best_runs():
    summary = sweep_report.summarise(_sweep(), _sweep())
    for measure in (EV, CE):
        assert summary.ratios[measure]["gated_paper"].median == pytest.approx(0.5)
    topk_ev, topk_ce = summary.ratios[EV]["topk"], summary.ratios[CE]["topk"]
    assert topk_ev.median == pytest.approx(16 / math.sqrt(16 * 32)) and topk_ce.median == pytest.approx(0.25)
    assert summary.matched_value("standard", EV, 16).mean == pytest.approx(0.8)
    assert summary.matched_value("gated_paper", EV, 32).mean == pytest.approx(0.95)
    assert summary.matched_value("topk", EV, 32).mean is None  # its one run has L0 16
    assert [r.value for r in summary.shrinkage_per_run["standard"]] == [0.9, 0.8, 0.7]  # per run, in order
    assert summary.mean_shrinkage["standard"] == pytest.approx(0.8) and summary.mean_shrinkage["gated_paper"] == pytest.approx(0.99)
    assert summary.best["standard"].metrics["l0"] == 32  # L0 <= 32 only
    assert summary.picked_on == "report set"  # these points have no selection measurements
    table = sweep_report.comparison_table(summary)
    assert table.loc["standard", "L0 / standard L0 at equal EV (median)"] == "reference"
    assert table.loc["gated_paper", "L0 / standard L0 at equal CE recovered (median)"] == 0.5
    assert table.loc["gated_paper", "points in / out of range (EV)"] == "2 / 0"
    assert table.loc["topk", "EV at L0=16"] == "0.850" and table.loc["topk", "EV at L0=32"] == "out of range"
    assert table.loc["standard", "shrinkage gamma (runs)"] == "0.700 to 0.900 (3 runs)"
    assert table.loc["gated_paper", "dead > 0.1 (runs with L0 >= 8)"] == "2 of 2"
    assert not table.isna().any().any()


def test_the_summary_pools_seeds_for_ratios_and_spreads_matched_values_over_them():
    summary = sweep_report.summarise(_seeded_sweep(), _seeded_sweep())
    ratio = summary.ratios[EV]["gated_paper"]
    assert ratio.n_in_range == 3 and ratio.n_out_of_range == 1  # 0.97 lies above the standard front (0.95)
    assert sorted({p.seed for p in ratio.points}) == [0, 1]
    at16 = summary.matched_value("gated_paper", EV, 16)
    assert at16.per_seed == {0: pytest.approx(0.9), 1: pytest.approx(0.92)}
    assert (at16.min, at16.max, at16.mean) == (pytest.approx(0.9), pytest.approx(0.92), pytest.approx(0.91))
    assert sweep_report.comparison_table(summary).loc["gated_paper", "EV at L0=16"] == "0.910 [0.900, 0.920]"
    assert len(summary.shrinkage_per_run["standard"]) == 6
    per_point = sweep_report.ratio_table(summary)
    assert len(per_point) == 4 + 1  # every gated and topk run, each seed
    assert per_point.loc[0, "L0 ratio at equal EV"] == 0.5 and per_point.loc[2, "L0 ratio at equal EV"] == "—"
    matched = sweep_report.matched_l0_table(summary)
    row = matched[(matched.architecture == "gated_paper") & (matched.measure == "EV") & (matched.L0 == 16)].iloc[0]
    assert (row["mean"], row["min"], row["max"], row["seeds in range"]) == (0.91, 0.9, 0.92, "2 of 2")
    assert not matched.isna().any().any()


def test_the_kept_dictionary_is_picked_on_the_selection_set():
    sweep = _sweep()
    for p, selection_ce in zip(sweep[:3], [0.5, 0.6, 0.99], strict=True):  # the L0-16 run wins on selection
        p.selection_metrics = {"l0": p.metrics["l0"], "ce_loss_recovered_mean": selection_ce}
    summary = sweep_report.summarise(sweep, sweep[:3])
    assert summary.best["standard"].metrics["l0"] == 16 and summary.picked_on == "selection set"


def test_the_fast_path_summary_takes_the_saved_dictionaries_as_the_best():
    saved = [_point("standard", {"l1_coefficient": 2}, 30, 0.91, ce=0.97, dead_fraction_on_train=0.0),
             _point("topk", {"k": 32}, 32.2, 0.97, ce=0.99, dead_fraction_on_train=0.0)]  # saved at L0 31.9
    summary = sweep_report.summarise(_sweep(), saved, pick_best=False)
    assert summary.best["standard"].metrics["ce_loss_recovered_mean"] == 0.97
    assert summary.best["topk"].metrics["l0"] == 32.2  # kept although measured just above the budget
    assert sweep_report.summarise(_sweep(), saved).best["topk"] is None  # picking would have dropped it
    assert summary.best["gated_paper"] is None  # no saved gated dictionary among the candidates
    assert summary.ratios[EV]["gated_paper"].median == pytest.approx(0.5)  # the ratios still come from the sweep
    assert summary.picked_on == "saved by a full run"


def test_load_sweep_reads_what_a_full_path_run_wrote(tmp_path):
    assert sweep_report.load_sweep(tmp_path / "missing.json") is None
    results = NotebookResults(sweep_report.NOTEBOOK, "full")
    results.metrics = {"runs": [p.row() for p in _sweep()], "baselines": [p.row() for p in _baselines()]}
    saved = sweep_report.load_sweep(results.write(tmp_path))
    assert len(saved.points) == len(_sweep()) and len(saved.baselines) == 4 and saved.scale == "full"
    assert saved.points[0].setting == {"l1_coefficient": 1} and saved.wall_time_s >= 0
    results.metrics = {"runs": [], "baselines": []}
    assert sweep_report.load_sweep(results.write(tmp_path)) is None


def _interpretability():
    return pd.DataFrame({"mean": [0.6, 0.3, 0.5], "ci_low": [0.55, 0.25, 0.45], "ci_high": [0.65, 0.35, 0.52],
                         "n_scored": [100, 100, 100], "n_skipped": [3, 0, 0], "n_candidates": [120, 512, 512]},
                        index=["SAE (standard)", "PCA", "ICA"])


def _record(results, train, sweep, saved_sweep=None):
    summary = sweep_report.summarise(sweep, sweep or _sweep())
    sweep_report.record_results(results, train=train, hook="blocks.3.hook_resid_pre", d_sae=64, n_train=10, n_eval=5,
                                sweep=sweep, baselines=_baselines(), summary=summary,
                                interpretability=_interpretability(), sae_beats_baselines=True, case_study_feature=3, saved_sweep=saved_sweep)


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
    for words in ("explained variance", "CE loss recovered"):
        claim = claims[f"Gated (paper loss) L0 / standard L0 at equal {words}"]
        assert claim.ours == pytest.approx(0.5) and claim.paper == 0.5 and claim.met is True
    assert claims["Gated (SAELens) L0 / standard L0 at equal explained variance"].ours == "no gated run"
    assert claims["shrinkage gamma, gated (paper): its run furthest from 1"].ours == 0.98
    assert claims["shrinkage gamma, standard: mean over its runs (below gated (paper)'s mean)"].met is True  # 0.8
    assert claims["CE loss recovered at L0 = 32 (standard, mean over seeds)"].ours == pytest.approx(0.9)
    assert claims["CE loss recovered at L0 = 32 (topk, mean over seeds)"].ours == "L0 = 32 outside its runs' range"
    margin = claims["interpretability (explain then simulate): best SAE's 95% interval low end minus the highest "
                    "baseline's high end"]
    assert margin.ours == pytest.approx(0.55 - 0.52) and margin.met is True
    assert fast.metrics["sae_beats_baselines"] is True
    assert fast.metrics["interpretability_score"]["ICA"] == pytest.approx(
        {"mean": 0.5, "ci_low": 0.45, "ci_high": 0.52, "n_scored": 100, "n_skipped": 0, "n_candidates": 512})


def test_the_results_file_keeps_every_seed_both_ratios_matched_values_and_per_run_numbers(tmp_path):
    results = NotebookResults(sweep_report.NOTEBOOK, "full")
    sweep = _seeded_sweep() + [_point("topk", {"k": 4}, 4, 0.7, seed=0, dead_fraction_on_train=0.5)]
    _record(results, train=True, sweep=sweep)
    metrics = json.loads(results.write(tmp_path).read_text())["metrics"]
    assert metrics["seeds"] == [0, 1] and len(metrics["runs"]) == len(sweep)
    assert [r["seed"] for r in metrics["runs"]][5:7] == [0, 1]
    for measure in (EV, CE):
        ratio = metrics["l0_ratio"][measure]["gated_paper"]
        assert ratio["n_points_in_range"] == 3 and ratio["n_points_out_of_range"] == 1
        assert ratio["reference_range"] == [0.8, 0.95] and len(ratio["points"]) == 4
        assert {"architecture", "setting", "seed", "l0", "value", "ratio"} <= ratio["points"][0].keys()
    assert metrics["l0_ratio_median"][EV]["gated_paper"] == pytest.approx(0.5)
    matched = {(m["architecture"], m["metric"], m["l0"]): m for m in metrics["matched_l0"]}
    assert matched["gated_paper", EV, 16]["per_seed"] == {"0": pytest.approx(0.9), "1": pytest.approx(0.92)}
    dead = {(d["architecture"], d["l0"], d["seed"]): d for d in metrics["dead_fraction_per_run"]}
    assert len(dead) == len(sweep)
    assert dead["gated_paper", 16, 1]["meets_aim"] is False and dead["standard", 16, 0]["meets_aim"] is True
    assert dead["topk", 4, 0]["meets_aim"] is None  # L0 < 8: no aim
    assert [r["shrinkage_gamma"] for r in metrics["shrinkage_gamma_per_run"]["standard"]] == [0.9, 0.8, 0.7] * 2
    assert metrics["kept_dictionaries"]["standard"]["setting"] == {"l1_coefficient": 2}
    claims = {c.claim: c for c in results.claims}
    assert claims["max dead fraction over runs with L0 >= 8 (never fire on the training activations)"].ours == 0.2
    assert claims["share of runs with L0 >= 8 whose dead fraction is <= 0.1"].ours == pytest.approx(7 / 11)


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


def test_the_committed_results_file_holds_a_sweep_the_fast_path_can_read():
    saved = sweep_report.load_sweep(project_root() / "results" / f"{sweep_report.NOTEBOOK}.json")
    assert saved is not None and saved.scale == "full" and saved.wall_time_s > 0
    assert {"standard", "gated", "gated_paper", "topk"} <= {p.architecture for p in saved.points}
