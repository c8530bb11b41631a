"""Transcoders per layer on a tiny random model: training through the one loop, saving and loading, the
replacement model's loss, the circuit ablations (exact where they must be), de-embedding, and the hand explorer."""

import pytest
import torch
from sae_lens import Transcoder, TranscoderConfig

from workbench import behaviours, hooks
from workbench.analysis import circuits, transcoders
from workbench.dictionaries import save_dictionary
from workbench.dictionaries.training import DictionaryTrainConfig


def random_transcoders(model, d_sae: int = 48) -> list[Transcoder]:
    """One random ReLU transcoder per MLP layer (as in test_circuits)."""
    out = []
    for layer in range(model.cfg.n_layers):
        torch.manual_seed(layer)
        tc = Transcoder(TranscoderConfig(d_in=model.cfg.d_model, d_sae=d_sae, d_out=model.cfg.d_model,
                                         apply_b_dec_to_input=False))
        with torch.no_grad():
            for p in (tc.W_enc, tc.W_dec, tc.b_enc, tc.b_dec):
                p.normal_(0, 0.3)
        out.append(tc)
    return out


@pytest.fixture(scope="module")
def gt(tiny_bridge, smoke_world, smoke_tokenizer):
    """Four greater-than prompts of one length, their frozen runs under random transcoders, and the year tokens."""
    batch = behaviours.greater_than_prompts(smoke_world, smoke_tokenizer)
    length = int(batch.lengths.mode().values)
    batch = batch.select((batch.lengths == length).nonzero()[:4, 0])
    tcs = random_transcoders(tiny_bridge)
    weights = circuits.ReplacementWeights.from_model(tiny_bridge, tcs)
    runs = circuits.freeze(tiny_bridge, weights, batch.tokens)
    return batch, behaviours.two_digit_token_ids(smoke_tokenizer), tcs, weights, runs


def test_a_trained_transcoder_saves_and_loads_for_every_layer(tiny_bridge, tiny_tokens, tmp_path):
    acts = transcoders.mlp_activations(tiny_bridge, tiny_tokens, range(tiny_bridge.cfg.n_layers))
    cfg = DictionaryTrainConfig(n_steps=30, batch_size=16, lr=3e-3, log_every=10)
    for layer in range(tiny_bridge.cfg.n_layers):
        tc, result = transcoders.train_transcoder(acts[hooks.mlp_in(layer)], acts[hooks.mlp_out(layer)], 48, 0.1, cfg)
        assert result.history[-1]["mse_loss"] < result.history[0]["mse_loss"]
        save_dictionary(tc, transcoders.transcoder_dir(tmp_path, layer), hook_name=hooks.mlp_in(layer),
                        hook_name_out=hooks.mlp_out(layer), model=tiny_bridge)
    assert transcoders.saved_transcoders(tmp_path, tiny_bridge.cfg.n_layers)
    loaded = transcoders.load_transcoders(tmp_path, tiny_bridge)
    circuits.ReplacementWeights.from_model(tiny_bridge, loaded)  # in layer order, the right widths
    x = acts[hooks.mlp_in(1)][:5]
    assert torch.allclose(loaded[1].decode(loaded[1].encode(x)), tc.decode(tc.encode(x)), atol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"layers \[0, 1\].*06_transcoder_circuits with train=True"):
        transcoders.load_transcoders(tmp_path / "elsewhere", tiny_bridge)


def test_replacement_ce_loss_matches_its_definition(tiny_bridge, tiny_tokens):
    tcs = random_transcoders(tiny_bridge)
    out = transcoders.replacement_ce_loss(tiny_bridge, tcs, tiny_tokens)
    expected = (out["ce_loss_zero_ablated"] - out["ce_loss_replaced"]) / (out["ce_loss_zero_ablated"] - out["ce_loss_clean"])
    assert out["ce_loss_recovered"] == pytest.approx(expected)
    assert out["ce_loss_replaced"] != pytest.approx(out["ce_loss_clean"])


def test_circuit_ablations_are_exact_where_nothing_changes(tiny_bridge, gt):
    batch, years, tcs, _, runs = gt
    clean = transcoders.prob_diffs(tiny_bridge, batch, years)
    means = transcoders.CircuitMeans.of(runs)
    nothing = torch.zeros_like(means.codes, dtype=torch.bool)
    ablate_nothing = transcoders.circuit_splices(tcs, nothing, means, "ablated")
    assert torch.allclose(transcoders.prob_diffs(tiny_bridge, batch, years, ablate_nothing), clean, atol=1e-5)
    one = batch.select([0])  # on one prompt the means are its own values: keeping any circuit changes nothing
    one_means = transcoders.CircuitMeans.of(runs[:1])
    only = transcoders.circuit_splices(tcs, nothing, one_means, "only")
    assert torch.allclose(transcoders.prob_diffs(tiny_bridge, one, years, only), clean[:1], atol=1e-5)
    everything = transcoders.circuit_splices(tcs, ~nothing, means, "only")  # all kept, errors at their means
    assert not torch.allclose(transcoders.prob_diffs(tiny_bridge, batch, years, everything), clean, atol=1e-4)
    with pytest.raises(ValueError, match="mode must be 'only' or 'ablated', got 'keep'"):
        transcoders.circuit_splices(tcs, nothing, means, "keep")


def test_random_control_matches_the_circuits_counts_among_active_features():
    torch.manual_seed(0)
    active = torch.rand(2, 3, 20) > 0.3
    mask = active & (torch.rand(2, 3, 20) > 0.7)
    control = transcoders.random_mask_like(mask, active, seed=1)
    assert not (control & mask).any() and not (control & ~active).any()
    wanted = torch.minimum(mask.sum(-1), (active & ~mask).sum(-1))
    assert torch.equal(control.sum(-1), wanted)


def test_at_l0_interpolates_on_a_log_axis():
    points = [{"l0": 4, "ce": 0.5}, {"l0": 16, "ce": 0.9}]
    assert transcoders.at_l0(points, 8, "ce") == pytest.approx(0.7)
    assert transcoders.at_l0(points, 32, "ce") is None


def test_de_embedding_is_the_embedding_read_by_the_encoder(gt):
    *_, weights, _ = gt
    scores = transcoders.de_embedding(weights, 1, 3)
    e = weights.W_E[7] - weights.W_E[7].mean()
    assert scores[7] == pytest.approx(float(e @ (weights.ln2_w[1] * weights.W_enc[1][:, 3])), rel=1e-4, abs=1e-5)
    via_head = transcoders.de_embedding(weights, 1, 3, head=(0, 1))
    assert via_head.shape == scores.shape and not torch.allclose(via_head, scores)
    with pytest.raises(ValueError, match="a head of layer 1 cannot feed a feature of layer 0"):
        transcoders.de_embedding(weights, 0, 3, head=(1, 0))


def test_the_explorer_shows_edges_and_the_ablated_curve_without_a_front_end(tiny_bridge, gt):
    batch, years, tcs, weights, runs = gt
    final = len(runs[0].tokens) - 1
    graphs, prunes = {}, {}
    for run, yy in zip(runs, batch.labels["yy"].tolist(), strict=True):
        target = circuits.Target.logit(circuits.greater_than_direction(years, yy, tiny_bridge.cfg.d_vocab), final,
                                       f"later - earlier (YY={yy:02d})")
        graphs[yy] = circuits.attribute(weights, run, [target], max_feature_rows=6)
        prunes[yy] = circuits.prune(graphs[yy])
    means = transcoders.CircuitMeans.of(runs)
    yy_pick, node_pick, out = transcoders.circuit_explorer(tiny_bridge, tcs, graphs, prunes, batch, years, means).children
    assert "top incoming edges" in out.value and "<img src='data:image/png;base64," in out.value
    assert f"YY={yy_pick.value:02d}" in out.value
    feature = next(n for _, n in node_pick.options if graphs[yy_pick.value].kind(n) == circuits.NodeKind.FEATURE)
    node_pick.value = feature
    assert graphs[yy_pick.value].label(feature) in out.value and "mean prob diff" in out.value
    other = next(y for y in graphs if y != yy_pick.value)
    yy_pick.value = other
    assert f"YY={other:02d}" in out.value and node_pick.value == graphs[other].target_node()


def test_the_results_file_holds_every_key_the_issue_lists(tmp_path):
    import json

    from workbench.results import NotebookResults

    curves = {"model": torch.tensor([0.9, 0.7]), "replacement model": torch.tensor([0.5, 0.3]),
              "circuit only": torch.tensor([0.8, 0.6]), "circuit ablated": torch.tensor([0.5, 0.4]),
              "random features only": torch.tensor([0.5, 0.45]), "every feature, errors at means": torch.tensor([0.8, 0.7]),
              transcoders.FLOOR: torch.tensor([0.5, 0.4])}
    summary = transcoders.causal_summary(curves)
    assert summary.floor == pytest.approx(0.45) and summary.above["model"] == pytest.approx(1.0)
    assert summary.above["circuit only"] == pytest.approx((0.7 - 0.45) / (0.8 - 0.45))
    layer = {"layer": 0, "kind": "transcoder", "l0": 10.0, "explained_variance": 0.9, "ce_loss_recovered_zero": 0.95}
    results = NotebookResults("06_transcoder_circuits", "smoke")
    transcoders.record_results(
        results, training=True, d_sae=64, l1=1.6, n_train=100, n_eval=10, train_seconds={0: 1.0}, layers=[layer],
        replacement={"ce_loss_recovered": 0.9}, sweep=[layer | {"kind": "sae"}], cmp_layer=0,
        sae_at_l0={"ce_loss_recovered_zero": 0.93, "explained_variance": 0.9}, summary=summary, curves=curves,
        yys=[10, 20], mask=torch.ones(1, 2, 3, dtype=torch.bool), top_features=[], year_features=[],
        top_heads=[(1.0, "L0.H0", (0, 0))], year_position=1, row_gap=0.0, example_graph={})
    payload = json.loads(results.write(tmp_path).read_text())
    for key in ("layers", "replacement_ce_loss_recovered", "prob_diff_model", "prob_diff_replacement_model",
                "prob_diff_circuit_only", "prob_diff_circuit_ablated", "n_circuit_features", "top_features"):
        assert key in payload["metrics"], key
    assert payload["scale"] == "smoke" and payload["metrics"]["n_circuit_features"] == 6
    targets = {c["claim"]: c["target"] for c in payload["claims"]}
    assert targets["Circuit only: prob diff as a share of the model's"] == ">= 0.8"
    assert targets["Circuit ablated: prob diff as a share of the model's"] == "<= 0.2"
    with pytest.raises(ValueError, match="curves lack the runs"):
        transcoders.causal_summary({"model": torch.ones(2)})
