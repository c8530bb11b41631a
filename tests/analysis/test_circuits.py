"""Attribution graphs on a tiny random model with random transcoders, checked as circuit-tracer checks its own:
every edge the code predicts is what the real intervention (in the model, through its hook points, with attention
patterns, LayerNorm scales and the other features frozen) changes in the target; rows add up to pre-activations."""

import json

import pytest
import torch
from sae_lens import Transcoder, TranscoderConfig

from workbench import hooks, interventions
from workbench.analysis import circuits, transcoders
from workbench.analysis.circuits import NodeKind

TOL = 1e-4


def random_transcoders(model, d_sae: int = 48, seed: int = 0, hook_names: bool = True) -> list[Transcoder]:
    """One random ReLU transcoder per MLP layer, with non-zero biases (so the bias node has something to carry)."""
    d = model.cfg.d_model
    out = []
    for layer in range(model.cfg.n_layers):
        torch.manual_seed(seed + layer)
        tc = Transcoder(TranscoderConfig(d_in=d, d_sae=d_sae, d_out=d, apply_b_dec_to_input=False))
        with torch.no_grad():
            tc.W_enc.normal_(0, 0.3)
            tc.W_dec.normal_(0, 0.3)
            tc.b_enc.normal_(0, 0.3)
            tc.b_dec.normal_(0, 0.3)
        if hook_names:
            tc.cfg.metadata.hook_name, tc.cfg.metadata.hook_name_out = hooks.mlp_in(layer), hooks.mlp_out(layer)
        out.append(tc)
    return out


@pytest.fixture(scope="module")
def setup(tiny_bridge, smoke_world):
    prompts = [q.prompt for q in smoke_world.qa_split("unseen_template") if q.template_id == 2][:2]
    toks = [tiny_bridge.to_tokens(p) for p in prompts]
    n = min(t.shape[1] for t in toks)
    tokens = torch.cat([t[:, :n] for t in toks])
    tcs = random_transcoders(tiny_bridge)
    weights = circuits.ReplacementWeights.from_model(tiny_bridge, tcs)
    runs = circuits.freeze(tiny_bridge, weights, tokens)
    torch.manual_seed(3)
    target = circuits.Target.logit(torch.randn(tiny_bridge.cfg.d_vocab), pos=n - 1, description="random direction")
    graph = circuits.attribute(weights, runs[0], [target], batch_size=16)
    return tcs, weights, runs, target, graph


def values_in_model(model, weights, run, graph, target, **frozen) -> torch.Tensor:
    """Each computed row's value read off the real model under ``frozen_model``: feature pre-activations from
    ``mlp.hook_in``, the target from the logits."""
    with circuits.frozen_model(model, weights, run, **frozen) as seen:
        logits = model(run.tokens[None]).detach().float()[0]
    out = torch.full((graph.n_nodes,), float("nan"))
    for node in graph.computed.nonzero()[:, 0].tolist():
        if graph.kind(node) == NodeKind.FEATURE:
            layer, pos, index = graph.features[node].tolist()
            out[node] = seen[layer][0, pos] @ weights.W_enc[layer][:, index] + weights.b_enc[layer][index]
        else:
            out[node] = logits[target.pos] @ target.direction
    return out


def assert_effect(predicted, before, after):
    rows = ~torch.isnan(before)
    gap = (before[rows] - after[rows] - predicted[rows]).abs().max().item()
    assert gap < TOL * max(1.0, before[rows].abs().max().item()), f"edge misses the intervention by {gap:.2e}"


def test_the_frozen_replacement_model_reproduces_the_models_logits(tiny_bridge, setup):
    _, weights, runs, _, _ = setup
    for run in runs:
        assert torch.allclose(circuits.frozen_logits(weights, run), run.logits, atol=1e-4)
        with circuits.frozen_model(tiny_bridge, weights, run):
            frozen = tiny_bridge(run.tokens[None])[0]
        assert torch.allclose(frozen, run.logits, atol=1e-4)  # freezing at the run's own values changes nothing


def test_attributions_into_every_node_add_up_to_its_pre_activation(tiny_bridge, setup):
    _, weights, runs, target, graph = setup
    assert graph.computed[:graph.n_features].all() and graph.computed[graph.target_node()]
    values = values_in_model(tiny_bridge, weights, runs[0], graph, target)
    rows = graph.computed.nonzero()[:, 0]
    sums = graph.adjacency[rows].sum(1)
    assert torch.allclose(sums, values[rows], atol=TOL * values.abs().nan_to_num().max())
    assert torch.allclose(sums[:-1], graph.activations[:graph.n_features], atol=TOL)  # a feature's pre-activation is its z
    assert graph.adjacency[graph.target_node(), graph.bias_node] != 0  # the biases are a node of their own


def test_every_feature_edge_equals_the_real_intervention(tiny_bridge, setup):
    _, weights, runs, target, graph = setup
    run = runs[0]
    before = values_in_model(tiny_bridge, weights, run, graph, target)
    for node in range(graph.n_features):
        layer, pos, index = graph.features[node].tolist()
        codes = run.codes.clone()
        codes[layer, pos, index] = 0
        after = values_in_model(tiny_bridge, weights, run, graph, target, codes=codes)
        assert_effect(graph.adjacency[:, node], before, after)


def test_every_error_and_embedding_edge_equals_the_real_intervention(tiny_bridge, setup):
    _, weights, runs, target, graph = setup
    run = runs[0]
    before = values_in_model(tiny_bridge, weights, run, graph, target)
    for layer in range(graph.n_layers):
        for pos in range(graph.n_pos):
            errors = run.errors.clone()
            errors[layer, pos] = 0
            after = values_in_model(tiny_bridge, weights, run, graph, target, errors=errors)
            assert_effect(graph.adjacency[:, graph.error_node(layer, pos)], before, after)
    for pos in range(graph.n_pos):
        with interventions.patched(tiny_bridge, hooks.resid_pre(0), torch.zeros(tiny_bridge.cfg.d_model), positions=[pos]):
            after = values_in_model(tiny_bridge, weights, run, graph, target)
        assert_effect(graph.adjacency[:, graph.embedding_node(pos)], before, after)


def test_the_bias_node_is_the_target_with_every_source_removed(tiny_bridge, setup):
    _, weights, runs, target, graph = setup
    run = runs[0]
    with interventions.patched(tiny_bridge, hooks.resid_pre(0), torch.zeros(tiny_bridge.cfg.d_model)):
        nothing = values_in_model(tiny_bridge, weights, run, graph, target, codes=torch.zeros_like(run.codes),
                                  errors=torch.zeros_like(run.errors))
    rows = graph.computed
    assert torch.allclose(graph.adjacency[rows, graph.bias_node], nothing[rows], atol=TOL)


def test_head_messages_equal_removing_that_attention_weight(tiny_bridge, setup):
    _, weights, runs, target, graph = setup
    run = runs[0]
    before = values_in_model(tiny_bridge, weights, run, graph, target)[graph.target_node()]
    heads = graph.head_attribution[0]
    for flat in heads.abs().flatten().topk(6).indices.tolist():
        layer, head, dst, src = torch.unravel_index(torch.tensor(flat), heads.shape)
        pattern = run.pattern.clone()
        pattern[layer, head, dst, src] = 0
        after = values_in_model(tiny_bridge, weights, run, graph, target, pattern=pattern)[graph.target_node()]
        assert abs((before - after) - heads[layer, head, dst, src]) < TOL * max(1.0, abs(float(before)))


def test_an_unfrozen_intervention_differs_from_the_edge(tiny_bridge, setup):
    """What the freezing buys: in the model as it runs (attention and LayerNorm free, later features reacting),
    removing a feature does not change the target by its edge. Guards against a test that would pass anyway."""
    tcs, weights, runs, target, graph = setup
    run = runs[0]
    node = int(graph.adjacency[graph.target_node(), :graph.n_features].abs().argmax())
    layer, pos, index = graph.features[node].tolist()
    splices = transcoders.replacement_splices(tcs)
    with interventions.spliced(tiny_bridge, *splices):
        before = tiny_bridge(run.tokens[None])[0, target.pos] @ target.direction
    splices[layer].edit = interventions.zero_features([index], positions=[pos])
    with interventions.spliced(tiny_bridge, *splices):
        after = tiny_bridge(run.tokens[None])[0, target.pos] @ target.direction
    assert abs((before - after) - graph.adjacency[graph.target_node(), node]) > 10 * TOL


def test_edge_routes_add_up_to_the_edge(setup):
    _, weights, runs, target, graph = setup
    t = graph.target_node()
    for source in graph.adjacency[t, :graph.n_features].abs().topk(5).indices.tolist():
        routes = circuits.edge_routes(weights, runs[0], graph, t, source, target_spec=target)
        assert abs(sum(routes.values()) - graph.adjacency[t, source]) < TOL * max(1.0, graph.adjacency[t].abs().max())
        if graph.features[source, 1] != target.pos:
            assert routes["residual"] == 0.0
    feature_row = int(graph.features[:, 0].argmax())  # a layer-1 feature's row: routes through layer-1 heads only
    for source in graph.adjacency[feature_row, :graph.n_features].nonzero()[:, 0].tolist()[:5]:
        routes = circuits.edge_routes(weights, runs[0], graph, feature_row, source)
        assert abs(sum(routes.values()) - graph.adjacency[feature_row, source]) < TOL


def test_replacement_model_with_error_terms_reproduces_the_clean_logits(tiny_bridge, setup):
    tcs, _, runs, _, _ = setup
    tokens = torch.stack([r.tokens for r in runs])
    with interventions.spliced(tiny_bridge, *transcoders.replacement_splices(tcs)):
        replaced = tiny_bridge(tokens)
    assert torch.allclose(replaced, tiny_bridge(tokens), atol=1e-5)
    with interventions.spliced(tiny_bridge, *transcoders.replacement_splices(tcs, use_error_term=False)):
        assert not torch.allclose(tiny_bridge(tokens), replaced, atol=1e-3)


def test_a_transcoder_for_the_wrong_layer_or_width_gives_a_clear_error(tiny_bridge):
    tcs = random_transcoders(tiny_bridge)
    with pytest.raises(ValueError, match="pass the transcoders in layer order"):
        circuits.ReplacementWeights.from_model(tiny_bridge, tcs[::-1])
    with pytest.raises(ValueError, match="got 1 transcoders for a model with 2 MLP layers"):
        circuits.ReplacementWeights.from_model(tiny_bridge, tcs[:1])
    narrow = Transcoder(TranscoderConfig(d_in=16, d_sae=48, d_out=16, apply_b_dec_to_input=False))
    with pytest.raises(ValueError, match="maps width 16 -> 16, but the model's MLPs map 32 -> 32"):
        circuits.ReplacementWeights.from_model(tiny_bridge, [tcs[0], narrow])
    wide = random_transcoders(tiny_bridge, d_sae=64)
    with pytest.raises(ValueError, match=r"different widths d_sae \[48, 64\]"):
        circuits.ReplacementWeights.from_model(tiny_bridge, [tcs[0], wide[1]])


def test_graph_saves_as_safetensors_and_json_and_loads_back(setup, tmp_path):
    *_, graph = setup
    graph.save(tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["graph.json", "graph.safetensors"]
    json.loads((tmp_path / "g" / "graph.json").read_text())
    back = circuits.Graph.load(tmp_path / "g")
    assert torch.equal(back.adjacency, graph.adjacency) and torch.equal(back.features, graph.features)
    assert back.targets == graph.targets and back.label(0) == graph.label(0)
    with pytest.raises(FileNotFoundError, match="graph.safetensors"):
        circuits.Graph.load(tmp_path / "nothing")


def test_pruning_keeps_targets_and_embeddings_and_drops_weak_nodes(setup):
    *_, graph = setup
    result = circuits.prune(graph, node_threshold=0.5, edge_threshold=0.9)
    assert result.node_mask[graph.target_node()] and result.node_mask[graph.embedding_node(0):graph.bias_node].all()
    kept = result.node_mask[:graph.n_features]
    assert 0 < kept.sum() < graph.n_features
    assert result.influence[:graph.n_features][kept].min() >= result.influence[:graph.n_features][~kept].max() - 1e-9 \
        or not result.edge_mask.any(0)[:graph.n_features][~kept].any()
    assert not result.edge_mask[~result.node_mask].any() and not result.edge_mask[:, ~result.node_mask].any()
    everything = circuits.prune(graph, node_threshold=1.0, edge_threshold=1.0)
    assert everything.node_mask.sum() >= result.node_mask.sum()
    with pytest.raises(ValueError, match=r"node_threshold must be in \[0, 1\], got 1.5"):
        circuits.prune(graph, node_threshold=1.5)


def test_greedy_paths_follow_the_largest_positive_edges(setup):
    *_, graph = setup
    t = graph.target_node()
    paths = circuits.greedy_paths(graph, t, n_iters=3, n_branches=4)
    row = graph.adjacency[t]
    first = row.topk(4).indices.tolist()
    assert [p.nodes[1] for p in paths[0]] == [s for s in first if row[s] > 0]
    for level in paths:
        for p in level:
            for k, a in enumerate(p.attributions):
                assert a > 0 and a == pytest.approx(float(graph.adjacency[p.nodes[k], p.nodes[k + 1]]))
    assert "<-" in circuits.path_string(graph, paths[-1][0])


def test_max_feature_rows_attributes_the_most_influential_features_first(setup):
    _, weights, runs, target, full = setup
    graph = circuits.attribute(weights, runs[0], [target], max_feature_rows=5, batch_size=2)
    assert graph.computed[:graph.n_features].sum() == 5
    rows = graph.computed.nonzero()[:, 0]
    assert torch.allclose(graph.adjacency[rows], full.adjacency[rows], atol=1e-6)
    first = full.adjacency[full.target_node(), :full.n_features].abs().topk(2).indices
    assert graph.computed[first].all()


def test_greater_than_direction_is_later_minus_earlier_mean_logit():
    years = list(range(100, 200))
    d = circuits.greater_than_direction(years, 30, 300)
    logits = torch.randn(300)
    expected = logits[131:200].mean() - logits[100:131].mean()
    assert torch.isclose(logits @ d, expected, atol=1e-5) and d.sum().abs() < 1e-5


def test_the_pruned_graph_keeps_the_kept_features_edges_and_every_other_node(setup):
    *_, graph = setup
    result = circuits.prune(graph, node_threshold=0.5)
    small, small_result = circuits.pruned(graph, result)
    kept = result.node_mask[:graph.n_features].nonzero()[:, 0]
    assert small.n_features == len(kept) and small.n_nodes == graph.n_nodes - graph.n_features + len(kept)
    assert small.label(small.error_node(1, 3)) == graph.label(graph.error_node(1, 3)) == "err L1 @3"
    assert small.label(0) == graph.label(int(kept[0]))
    assert torch.equal(small.adjacency[small.target_node(), :small.n_features], graph.adjacency[graph.target_node(), kept])
    assert torch.equal(small_result.influence[small.target_node(0):], result.influence[graph.target_node(0):])


def test_node_influence_is_the_normalised_power_series(setup):
    *_, graph = setup
    a = graph.adjacency.abs()
    a = a / a.sum(1, keepdim=True).clamp_min(1e-10)
    weights = torch.zeros(graph.n_nodes)
    weights[graph.target_node():] = 1.0
    expected, power = torch.zeros(graph.n_nodes), weights.clone()
    for _ in range(graph.n_layers + 3):
        power = power @ a
        expected += power
    assert torch.allclose(circuits.node_influence(graph), expected, atol=1e-6)


def test_input_invariant_connections_are_the_edges_without_activation_scales_and_patterns(setup):
    """A layer-0 feature's edge to a layer-1 feature splits into a residual route (same position) and routes through
    layer-1 heads; each is activation x connection / LayerNorm scales (x attention weight through a head)."""
    _, weights, runs, _, graph = setup
    run = runs[0]
    row = next(n for n in range(graph.n_features) if graph.features[n, 0] == 1)
    _, dst, j = graph.features[row].tolist()
    sources = [n for n in range(graph.n_features) if graph.features[n, 0] == 0 and graph.adjacency[row, n] != 0]
    for s in sources[:6]:
        _, src, i = graph.features[s].tolist()
        routes = circuits.edge_routes(weights, run, graph, row, s)
        z = graph.activations[s]
        if src == dst:
            direct = circuits.input_invariant_connections(weights, [(0, i)], [(1, j)])[0, 0]
            assert routes["residual"] == pytest.approx(float(z * direct / run.ln2_scale[1, dst]), rel=1e-4, abs=1e-6)
        for h in range(weights.n_heads):
            via = circuits.input_invariant_connections(weights, [(0, i)], [(1, j)], head=(1, h))[0, 0]
            expected = z * run.pattern[1, h, dst, src] * via / (run.ln1_scale[1, src] * run.ln2_scale[1, dst])
            assert routes[f"L1.H{h}"] == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    assert circuits.input_invariant_connections(weights, [(1, 0)], [(1, 1)]).item() == 0.0


def test_the_pruned_graph_draws_with_labelled_axes(setup, tmp_path):
    from workbench import viz

    *_, graph = setup
    fig = viz.plot_attribution_graph(graph, circuits.prune(graph), title="tiny graph", max_edges=10)
    assert len(fig.axes[0].lines) <= 10 and viz.save_figure(fig, "graph", directory=tmp_path).exists()
