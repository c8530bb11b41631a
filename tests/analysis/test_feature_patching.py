"""Feature patching against the interventions it stands for, on the tiny random model: S = none is the clean run,
S = all the counterfactual reconstruction plus the clean error, the fast search makes the decisions of the
one-visit-at-a-time search through the real splice, and the explorer updates when its controls change."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import hooks, interventions
from workbench.analysis import feature_patching as fp
from workbench.analysis import patching
from workbench.dictionaries import baselines
from workbench.prompts import PromptBatch, kl_divergence

LAYER = 1


@pytest.fixture(scope="module")
def tiny_bridge(tiny_model_dir):
    """The tiny random model with sharpened weights (embeddings x10, attention scores x900, layer outputs x30), its own
    copy: at random initialisation its next-token distributions are nearly uniform, so the counterfactual name moves the
    KL by 2e-6 and every search decision would be a tie; sharpened, by about 0.08."""
    from workbench import load_model

    model = load_model(tiny_model_dir, device="cpu")
    hf, d = model.original_model.transformer, model.cfg.d_model
    with torch.no_grad():
        hf.wte.weight.mul_(10)
        for block in hf.h:
            block.attn.c_proj.weight.mul_(30)
            block.mlp.c_proj.weight.mul_(30)
            block.attn.c_attn.weight[:, :2 * d].mul_(30)  # queries and keys
    return model


def _standard_sae(d_in: int, d_sae: int = 64, seed: int = 0):
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():  # random init: about half the codes fire; a non-zero b_dec catches a decode that drops it
        sae.b_dec.normal_(std=0.1)
        sae.b_enc.fill_(0.1)
    return sae


def _topk_sae(d_in: int, d_sae: int = 64, k: int = 8):
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(1)
    return TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))


@pytest.fixture(scope="module")
def ioi(tiny_bridge, smoke_world):
    """Eight IOI prompts of several lengths (templates differ), right-padded, IO replaced in the counterfactual."""
    batch = patching.ioi_patching_batch(smoke_world.ioi_eval[:8], tiny_bridge.tokenizer)
    assert len(set(batch.lengths.tolist())) > 1, "the fixture should mix prompt lengths"
    return batch


@pytest.fixture(scope="module")
def acts(tiny_bridge, ioi):
    _, cache = tiny_bridge.run_with_cache(torch.cat([ioi.tokens, ioi.counterfactual.tokens]),
                                          names_filter=[hooks.resid_pre(LAYER)])
    return cache[hooks.resid_pre(LAYER)].reshape(-1, tiny_bridge.cfg.d_model)


DICTIONARIES = ["standard SAE", "TopK SAE", "PCA", "residual basis"]


def _dictionary(name: str, d_model: int, acts: torch.Tensor):
    if name == "standard SAE":
        return _standard_sae(d_model)
    if name == "TopK SAE":
        return _topk_sae(d_model)
    if name == "PCA":
        return baselines.pca(acts, 16)
    return baselines.neuron_basis(acts)


def _final(logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
    return logits[torch.arange(len(batch)), batch.final_positions]


@pytest.mark.parametrize("name", DICTIONARIES)
def test_patching_no_feature_is_the_clean_run(tiny_bridge, ioi, acts, name):
    dictionary = _dictionary(name, tiny_bridge.cfg.d_model, acts)
    got = fp.patched_logits(tiny_bridge, ioi, dictionary, hooks.resid_pre(LAYER), [])
    torch.testing.assert_close(got, tiny_bridge(ioi.tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", DICTIONARIES)
def test_patching_every_feature_is_the_counterfactual_reconstruction_plus_the_clean_error(tiny_bridge, ioi, acts, name):
    dictionary = _dictionary(name, tiny_bridge.cfg.d_model, acts)
    hook = hooks.resid_pre(LAYER)
    _, clean = tiny_bridge.run_with_cache(ioi.tokens, names_filter=[hook])
    _, counter = tiny_bridge.run_with_cache(ioi.counterfactual.tokens, names_filter=[hook])
    with torch.no_grad():
        recon = dictionary.decode(dictionary.encode(clean[hook]))
        expected = dictionary.decode(dictionary.encode(counter[hook])) + (clean[hook] - recon)
        with interventions.patched(tiny_bridge, hook, expected):
            want = tiny_bridge(ioi.tokens)
    d_sae = dictionary.W_dec.shape[0]
    got = fp.patched_logits(tiny_bridge, ioi, dictionary, hook, range(d_sae))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # the search's fast form of the same residual, at every real position
    problem = fp.prepare(tiny_bridge, ioi, dictionary, LAYER, name=name)
    fast = problem.clean_resid + problem.edit(torch.ones(d_sae, dtype=torch.bool))
    torch.testing.assert_close(fast[problem.mask], expected[problem.mask], atol=1e-5, rtol=0)


def test_a_full_basis_patched_everywhere_gives_the_counterfactual_logits(tiny_bridge, ioi, acts):
    """The residual basis reconstructs exactly, so patching all its features is patching the whole layer."""
    hook = hooks.resid_pre(LAYER)
    basis = baselines.neuron_basis(acts)
    cf_logits = tiny_bridge(ioi.counterfactual.tokens)
    _, counter = tiny_bridge.run_with_cache(ioi.counterfactual.tokens, names_filter=[hook])
    with torch.no_grad(), interventions.patched(tiny_bridge, hook, counter[hook]):
        whole_layer = tiny_bridge(ioi.tokens)
    torch.testing.assert_close(whole_layer, cf_logits, atol=1e-5, rtol=0)
    all_features = fp.patched_logits(tiny_bridge, ioi, basis, hook, range(tiny_bridge.cfg.d_model))
    torch.testing.assert_close(_final(all_features, ioi), _final(cf_logits, ioi), atol=1e-4, rtol=0)
    problem = fp.prepare(tiny_bridge, ioi, basis, LAYER)
    result = fp.greedy_search(tiny_bridge, problem, taus=[1e-5], progress=False)
    assert result.start["kl"] == pytest.approx(0.0, abs=1e-6)
    assert problem.kl_clean > 1e-3, "the counterfactual should change the tiny model's prediction"


def test_ragged_prompts_give_each_prompts_own_patched_run(tiny_bridge, ioi, acts):
    """Prompts of different lengths in one right-padded batch: each prompt's final logits are those of its own,
    unpadded, patched run."""
    sae = _standard_sae(tiny_bridge.cfg.d_model)
    features = list(range(0, 64, 3))
    batched = _final(fp.patched_logits(tiny_bridge, ioi, sae, hooks.resid_pre(LAYER), features), ioi)
    for i in range(len(ioi)):
        n = int(ioi.lengths[i])
        one = ioi.select([i])
        one = dataclasses.replace(one, tokens=one.tokens[:, :n], counterfactual=dataclasses.replace(
            one.counterfactual, tokens=one.counterfactual.tokens[:, :n]))
        alone = fp.patched_logits(tiny_bridge, one, sae, hooks.resid_pre(LAYER), features)[0, -1]
        torch.testing.assert_close(batched[i], alone, atol=1e-4, rtol=0)


def test_prompts_whose_counterfactual_has_another_length_are_refused(tiny_bridge):
    counter = PromptBatch.from_token_lists([[0, 5, 6, 7], [0, 5, 6]])
    batch = PromptBatch.from_token_lists([[0, 5, 6, 7], [0, 5, 6, 7]], answer_ids=torch.tensor([5, 5]),
                                         foil_ids=torch.tensor([6, 6]), counterfactual=counter)
    with pytest.raises(ValueError, match="equal lengths for position-aligned patching.*prompt 1: 4 vs 3"):
        fp.prepare(tiny_bridge, batch, _standard_sae(tiny_bridge.cfg.d_model), LAYER)


def test_a_name_of_several_tokens_is_refused(tiny_bridge, smoke_world):
    prompt = smoke_world.ioi_eval[0]
    two_words = dataclasses.replace(prompt, s=f"{prompt.s} {prompt.io}")
    with pytest.raises(ValueError, match=r"is 2 tokens .* not one"):
        patching.ioi_patching_batch([two_words], tiny_bridge.tokenizer)


def test_a_decoder_that_is_not_affine_is_refused(tiny_bridge, ioi, acts):
    basis = baselines.neuron_basis(acts)
    basis.decode = lambda codes: torch.tanh(codes)  # not c @ D + b
    with pytest.raises(ValueError, match="not affine"):
        fp.prepare(tiny_bridge, ioi, basis, LAYER)


TAUS = np.logspace(-5, 0, 8).tolist()


@pytest.fixture(scope="module")
def problem(tiny_bridge, ioi):
    return fp.prepare(tiny_bridge, ioi, _standard_sae(tiny_bridge.cfg.d_model), LAYER, name="SAE")


@pytest.mark.parametrize("name", ["PCA", "residual basis"])
def test_search_is_deterministic_under_a_seed_and_its_kl_never_falls_from_an_exact_basis(tiny_bridge, ioi, acts, name):
    """A full basis patched everywhere IS the counterfactual run (KL 0), and on the tiny model each tau only adds KL."""
    problem = fp.prepare(tiny_bridge, ioi, _dictionary(name, tiny_bridge.cfg.d_model, acts), LAYER, name=name)
    first = fp.greedy_search(tiny_bridge, problem, taus=TAUS, seed=3, progress=False)
    again = fp.greedy_search(tiny_bridge, problem, taus=TAUS, seed=3, progress=False)
    assert first == again  # every field but the cost
    kl = [first.start["kl"], *first.kl]
    assert np.all(np.diff(kl) >= -1e-6), kl
    assert np.all(np.diff(first.n_features) <= 0) and first.n_features[-1] < len(problem.candidates)
    other = fp.greedy_search(tiny_bridge, problem, taus=TAUS, seed=4, progress=False)
    assert other.unpatched_at != first.unpatched_at, "another seed should visit the features in another order"


def test_with_an_inexact_sae_un_patching_can_lower_the_kl_as_in_the_papers_rule(tiny_bridge, problem):
    """The paper's rule un-patches a feature whenever the KL rises by less than tau, so also when it falls: with a
    random SAE, whose reconstruction of the counterfactual run is poor, the KL can go down from one tau to the next.
    What always holds: a tau adds less than tau per feature it un-patches, and the search is deterministic."""
    result = fp.greedy_search(tiny_bridge, problem, taus=TAUS, seed=3, progress=False)
    assert result == fp.greedy_search(tiny_bridge, problem, taus=TAUS, seed=3, progress=False)
    kl, n = [result.start["kl"], *result.kl], [result.start["n_features"], *result.n_features]
    for j, tau in enumerate(TAUS):
        assert kl[j + 1] - kl[j] < (n[j] - n[j + 1]) * tau + 1e-6
    assert min(np.diff(kl)) < 0, "this random SAE lowered the KL by un-patching on an earlier run; if no longer, the " \
                                 "docstring's claim needs another example"


def test_search_makes_the_decisions_of_the_one_at_a_time_search_through_the_splice(tiny_bridge, ioi):
    sae = _standard_sae(tiny_bridge.cfg.d_model)
    problem = fp.prepare(tiny_bridge, ioi, sae, LAYER)
    fast = fp.greedy_search(tiny_bridge, problem, taus=TAUS, seed=0, progress=False, token_budget=2000)
    slow = fp.naive_search(tiny_bridge, ioi, sae, LAYER, TAUS, seed=0)
    assert fast.n_features == [n for n, _ in slow]
    np.testing.assert_allclose(fast.kl, [k for _, k in slow], atol=1e-5)
    assert fast.cost.rows >= fast.cost.decisions and fast.cost.mispredictions < fast.cost.decisions


def test_running_from_the_layer_and_running_the_whole_model_agree(tiny_bridge, problem):
    from_layer = fp.greedy_search(tiny_bridge, problem, taus=TAUS[:4], progress=False, mode="from_layer")
    whole = fp.greedy_search(tiny_bridge, problem, taus=TAUS[:4], progress=False, mode="hooks")
    assert from_layer.n_features == whole.n_features
    np.testing.assert_allclose(from_layer.kl, whole.kl, atol=1e-5)
    with pytest.raises(ValueError, match="mode must be one of"):
        fp.greedy_search(tiny_bridge, problem, taus=TAUS, mode="fast")


def test_features_equal_in_both_runs_are_never_visited(tiny_bridge, ioi, problem):
    changed = (problem.delta_codes != 0).flatten(0, 1).any(0)
    assert problem.candidates.tolist() == changed.nonzero().flatten().tolist()
    result = fp.greedy_search(tiny_bridge, problem, taus=TAUS[:2], progress=False)
    assert result.start["n_features"] == len(problem.candidates) and result.cost.decisions >= len(problem.candidates)


def _result(name: str, n, kl, edit, kl_clean: float = 10.0) -> fp.SearchResult:
    return fp.SearchResult(name, 0, [1e-3] * (len(n) - 1), list(n[1:]), list(kl[1:]), list(edit[1:]),
                           {"n_features": n[0], "kl": kl[0], "edit_magnitude": edit[0]}, kl_clean, 100, [], [])


def test_frontier_summaries_read_the_point_that_reaches_the_kl():
    r = _result("sae", [40, 20, 5, 1], [0.5, 1.0, 4.0, 9.0], [8.0, 5.0, 2.0, 0.5])
    assert r.features_needed_at(5.0) == 5 and r.edit_magnitude_at(5.0) == 2.0
    assert r.features_needed_at(0.1) is None and r.edit_magnitude_at(0.1) is None
    worse = _result("pca", [60, 30, 10, 2], [0.5, 1.0, 4.0, 9.0], [9.0, 7.0, 3.0, 1.0])
    better = fp.compare(r, worse, kl_reference=5.0)
    assert better.dominates and better.share_lower == 1.0 and better.edit_ratio_at_kl == pytest.approx(2 / 3)
    assert not fp.compare(worse, r, kl_reference=5.0).dominates
    crossing = _result("ica", [60, 30, 10, 2], [0.5, 1.0, 4.0, 9.0], [7.0, 7.0, 1.0, 1.0])
    mixed = fp.compare(r, crossing, kl_reference=5.0)
    assert not mixed.dominates and 0 < mixed.share_lower < 1


def test_feature_positions_split_the_change_by_role(problem, ioi):
    feature = int(problem.candidates[0])
    shares = fp.feature_positions(problem, ioi, feature)
    assert set(shares) == {"IO", "S1", "S2", "final", "other"}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)


def test_explore_patches_what_it_is_given(tiny_bridge, ioi, acts):
    basis = baselines.neuron_basis(acts)
    nothing = fp.explore(tiny_bridge, ioi, 0, LAYER, basis)
    assert nothing.logit_diff_patched == pytest.approx(nothing.logit_diff_clean, abs=1e-5)
    everything = fp.explore(tiny_bridge, ioi, 0, LAYER, basis, features=range(tiny_bridge.cfg.d_model))
    assert everything.logit_diff_patched == pytest.approx(everything.logit_diff_counterfactual, abs=1e-4)
    all_heads = [(layer, h) for layer in range(tiny_bridge.cfg.n_layers) for h in range(tiny_bridge.cfg.n_heads)]
    heads = fp.explore(tiny_bridge, ioi, 0, heads=all_heads)
    assert heads.logit_diff_patched != pytest.approx(heads.logit_diff_clean, abs=1e-4)
    assert "head(s) 0.0" in heads.patched and len(heads.top_tokens) == 5
    with pytest.raises(ValueError, match="needs a layer and its dictionary"):
        fp.explore(tiny_bridge, ioi, 0, features=[1])


def test_explorer_updates_when_its_controls_change(tiny_bridge, ioi, acts):
    sae = _standard_sae(tiny_bridge.cfg.d_model)
    box = fp.explorer(tiny_bridge, ioi, {0: baselines.neuron_basis(acts), LAYER: sae}, {0: [1, 2], LAYER: [3, 4, 5]},
                      n_prompts=3)
    first = box.view.value
    assert "patched: nothing (the clean run)" in first
    box.prompt.value = 2
    assert box.view.value != first and "nothing" in box.view.value
    box.layer.value = LAYER
    assert list(box.features.options) == [3, 4, 5]
    box.features.value = (3, 5)
    assert "2 feature(s) at layer 1" in box.view.value
    box.heads.value = ((1, 0),)
    assert "head(s) 1.0" in box.view.value
    box.layer.value = 0
    assert box.features.value == () and list(box.features.options) == [1, 2]


# ---------------------------------------------------------------------------------------------- notebook 05's bookkeeping


def test_results_metrics_hold_every_key_the_issue_lists_and_the_claims_read_them():
    from workbench.results import NotebookResults

    sae = _result("SAE (standard)", [40, 20, 5, 1], [0.5, 1.0, 4.0, 9.0], [8.0, 5.0, 2.0, 0.5])
    pca = _result("PCA", [60, 30, 10, 2], [0.5, 1.0, 4.0, 9.0], [9.0, 7.0, 3.0, 1.0])
    ica = _result("ICA", [60, 30, 20, 2], [0.5, 1.0, 6.0, 9.0], [9.0, 7.0, 3.0, 1.0])
    metrics = fp.results_metrics({(3, r.name): r for r in (sae, pca, ica)}, {3: 5.0})
    assert metrics["layers"] == [3]
    assert metrics["features_needed_at_kl"]["3"] == {"SAE (standard)": 5, "PCA": 10, "ICA": 30}
    assert metrics["edit_magnitude_at_kl"]["3"]["PCA"] == 3.0
    assert metrics["sae_beats_pca"]["3"] == {"SAE (standard)": True}
    assert set(metrics["frontiers"]["3"]) == {"SAE (standard)", "PCA", "ICA"}
    results = NotebookResults("05_test", "smoke")
    fp.record_claims(results, metrics)
    claims = {c.claim: c for c in results.claims}
    assert claims["layer 3: SAE (standard) features / PCA's at half the clean KL"].ours == pytest.approx(0.5)
    assert claims["layer 3: SAE (standard) features / PCA's at half the clean KL"].met is True
    assert claims["layer 3: SAE (standard) frontier dominates PCA's in edit magnitude"].ours == "yes"
    verdict = fp.layer_verdict(metrics, 3)
    assert (verdict["n_sae"], verdict["n_pca"], verdict["pca"]) == ("5", "10", "dominates")
    unreached = fp.layer_verdict(fp.results_metrics({(3, r.name): r for r in (sae, pca, ica)}, {3: 0.1}), 3)
    assert unreached["n_sae"] == "not reached"


def test_tables_of_a_real_search(tiny_bridge, ioi, problem):
    result = fp.greedy_search(tiny_bridge, problem, taus=TAUS, progress=False)
    table = fp.frontier_table([result], kl_target=result.kl_clean / 2)
    assert table.loc["SAE", "features (candidates)"] == f"{len(problem.candidates)} of 64"
    top = fp.top_features(result, problem, ioi, kl_target=result.kl_clean / 2, k=3)
    assert len(top) <= 3 and {"feature", "share at IO", "share at final"} <= set(top.columns)
    assert set(top["feature"]) <= set(problem.candidates.tolist())
    speed = fp.mode_speed(tiny_bridge, problem, rows=4, repeats=1)
    assert speed["from_layer"] > 0 and speed["hooks"] > 0 and speed["speedup"] > 0


def test_baselines_are_full_bases(acts):
    for name, dictionary in fp.baseline_dictionaries(acts, ica_rows=500).items():
        x = acts[:50]
        torch.testing.assert_close(dictionary.decode(dictionary.encode(x)), x, atol=1e-3, rtol=1e-3, msg=name)


def test_load_or_train_trains_saves_and_then_loads(tiny_bridge, acts, tmp_path):
    from workbench.dictionaries.training import DictionaryTrainConfig

    cfg = DictionaryTrainConfig(n_steps=3, batch_size=32)
    settings = {"standard": {"l1_coefficient": 1.0}}
    folder = lambda arch: tmp_path / arch  # noqa: E731
    first = fp.load_or_train(tiny_bridge, LAYER, settings, folder, False, acts, acts, 64, cfg, {"scale": "smoke"})
    assert first["standard"][1] == "trained" and (tmp_path / "standard" / "cfg.json").exists()
    again = fp.load_or_train(tiny_bridge, LAYER, settings, folder, False, acts, acts, 64, cfg)
    assert again["standard"][1] == "loaded"
    torch.testing.assert_close(again["standard"][0].W_dec, first["standard"][0].W_dec)
    assert fp.load_or_train(tiny_bridge, LAYER, settings, folder, True, acts, acts, 64, cfg)["standard"][1] == "trained"


def test_where_features_sit_reads_the_shares_and_the_map(tiny_bridge, ioi):
    maps = patching.ioi_position_maps(tiny_bridge, ioi)
    table = pd.DataFrame({"share at IO": [0.8, 0.6], "share at final": [0.1, 0.2]})
    where = fp.where_features_sit(table, maps, LAYER)
    assert where["io"] == pytest.approx(0.7) and where["f"] == "IO" and where["r"] in ("IO", "final")
    assert where["agree"] == ("the same position" if where["r"] == "IO" else "different positions")


def _patched_set(result: fp.SearchResult, index: int) -> torch.Tensor:
    """The features still patched after tau number ``index``, as a mask."""
    return fp.feature_mask(result.patched_at(index), result.d_sae)


def test_banded_search_records_the_measured_kl_of_the_sets_it_names(tiny_bridge, ioi, problem):
    """The shortcut may take another path than the paper's search, but every point it records is the KL, through the
    real splice, of the set its un-patching times name; and it settles some features without a visit."""
    sae = _standard_sae(tiny_bridge.cfg.d_model)
    result = fp.greedy_search(tiny_bridge, problem, taus=TAUS, seed=0, band=2.0, progress=False)
    rows = torch.arange(len(ioi))
    for j in range(len(TAUS)):
        S = _patched_set(result, j)
        assert int(S.sum()) == result.n_features[j]
        logits = fp.patched_logits(tiny_bridge, ioi, sae, hooks.resid_pre(LAYER), S)
        kl = kl_divergence(problem.counterfactual_final_logits, logits[rows, ioi.final_positions]).mean().item()
        assert result.kl[j] == pytest.approx(kl, abs=1e-5)
        assert result.edit_magnitude[j] == pytest.approx(problem.edit_magnitude(S), abs=1e-6)
    assert result.cost.decided_by_prediction > 0 and result.cost.band == 2.0
    with pytest.raises(ValueError, match="band must be a factor above 1"):
        fp.greedy_search(tiny_bridge, problem, taus=TAUS, band=1.0)
    with pytest.raises(ValueError, match="taus must be ascending"):
        fp.greedy_search(tiny_bridge, problem, taus=TAUS[::-1])


def test_shortcut_check_runs_both_searches_on_the_same_orders(tiny_bridge, problem):
    check = fp.shortcut_check(tiny_bridge, problem, TAUS[:4], 2.0, kl_target=problem.kl_clean / 2, progress=False)
    assert check.exact == fp.greedy_search(tiny_bridge, problem, taus=TAUS[:4], seed=0, progress=False)
    assert check.exact.cost.band is None and check.banded.cost.band == 2.0
    assert 0 <= check.agreement <= 1
    values = check.note_values()
    assert values["n_taus"] == 4 and isinstance(values["exact_features_at_kl"], str)
    assert set(check.to_dict()) >= {"exact_features_at_kl", "banded_edit_at_kl", "agreement", "exact_seconds"}


def test_sae_dictionaries_load_notebook_03s_and_train_the_rest(tiny_bridge, acts, tmp_path):
    """The middle layer's SAEs come from notebook 03's folders when there, are trained into a temporary folder (never
    notebook 03's) when not; the other layer's go to ``out_root``."""
    from workbench.analysis import sweep_report
    from workbench.dictionaries.training import DictionaryTrainConfig

    cfg = DictionaryTrainConfig(n_steps=3, batch_size=32)
    settings = {"standard": {"l1_coefficient": 1.0}}
    saved, out = tmp_path / "saved", tmp_path / "out"
    by_layer = {0: acts, LAYER: acts}
    saes, how = fp.sae_dictionaries(tiny_bridge, [0, LAYER], saved, out, False, by_layer, by_layer, settings, 64, cfg)
    assert how == {0: {"standard": "trained"}, LAYER: {"standard": "trained"}}
    assert not saved.exists(), "notebook 03's folder must never be written here"
    assert (sweep_report.saved_dictionary_dir(out, LAYER, "standard") / "cfg.json").exists()
    assert set(saes[0]) == {"SAE (standard)"}
    fp.load_or_train(tiny_bridge, 0, {"topk": {"k": 4}}, lambda a: sweep_report.saved_dictionary_dir(saved, 0, a),
                     True, acts, acts, 64, cfg)  # what notebook 03 saves
    saes, how = fp.sae_dictionaries(tiny_bridge, [0, LAYER], saved, out, False, by_layer, by_layer, settings, 64, cfg)
    assert how == {0: {"topk": "loaded from notebook 03"}, LAYER: {"standard": "loaded"}}
    assert set(saes[0]) == {"SAE (topk)"}


def test_layer_verdict_reads_every_sae():
    sae = _result("SAE (standard)", [40, 20, 5, 1], [0.5, 1.0, 4.0, 9.0], [8.0, 5.0, 2.0, 0.5])
    topk = _result("SAE (topk)", [40, 20, 5, 1], [0.5, 1.0, 4.0, 9.0], [9.5, 8.0, 4.0, 2.0])
    pca = _result("PCA", [60, 30, 10, 2], [0.5, 1.0, 4.0, 9.0], [9.0, 7.0, 3.0, 1.0])
    ica = _result("ICA", [60, 30, 20, 2], [0.5, 1.0, 6.0, 9.0], [9.0, 7.0, 3.0, 1.0])
    metrics = fp.results_metrics({(3, r.name): r for r in (sae, topk, pca, ica)}, {3: 5.0})
    verdict = fp.layer_verdict(metrics, 3)
    assert (verdict["k"], verdict["k_pca"]) == (2, 1)
    assert "SAE (topk): PCA no, ICA no (5 features, edit 4.00)" in verdict["every_sae"]
    table = fp.frontier_table([sae, pca], kl_target=5.0)
    assert table.loc["SAE (standard)", "features at target KL"] == 5  # an int, not 5.0
    assert fp.frontier_table([sae], kl_target=0.1).loc["SAE (standard)", "features at target KL"] == "not reached"
