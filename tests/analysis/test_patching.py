"""Batched patching against the direct intervention it stands for, one patch per forward pass, on the tiny model."""

import pytest
import torch

from workbench import hooks, interventions
from workbench.analysis import patching


@pytest.fixture()
def pair(tiny_bridge, tiny_tokens):
    """Two prompts of one length: the clean run and its counterfactual, with a two-token metric."""
    clean, counterfactual = tiny_tokens[:1], tiny_tokens[1:2]
    a, b = int(tiny_tokens[0, 3]), int(tiny_tokens[1, 3])

    def metric(logits):
        return logits[:, -1, a] - logits[:, -1, b]

    _, cf_cache = tiny_bridge.run_with_cache(counterfactual)
    return clean, cf_cache, metric


def test_residual_patching_equals_one_patch_per_run(tiny_bridge, pair):
    clean, cf_cache, metric = pair
    grid = patching.residual_patching(tiny_bridge, clean, cf_cache, metric)
    assert grid.shape == (tiny_bridge.cfg.n_layers, clean.shape[1])
    with torch.no_grad():
        for layer in range(tiny_bridge.cfg.n_layers):
            name = hooks.resid_pre(layer)
            for pos in range(clean.shape[1]):
                with interventions.patched(tiny_bridge, name, cf_cache[name], positions=[pos]):
                    direct = metric(tiny_bridge(clean))[0]
                torch.testing.assert_close(grid[layer, pos], direct, atol=1e-4, rtol=1e-4)


def test_head_patching_equals_one_head_replaced_at_one_position(tiny_bridge, pair):
    clean, cf_cache, metric = pair
    grid = patching.head_patching(tiny_bridge, clean, cf_cache, metric, position=-1)
    assert grid.shape == (tiny_bridge.cfg.n_layers, tiny_bridge.cfg.n_heads)
    with torch.no_grad():
        base = metric(tiny_bridge(clean))[0]
        for layer in range(tiny_bridge.cfg.n_layers):
            name = hooks.z(layer)
            for head in range(tiny_bridge.cfg.n_heads):
                def swap(z, head=head, name=name):
                    z = z.clone()
                    z[:, -1, head] = cf_cache[name][:, -1, head]
                    return z

                with interventions.replaced(tiny_bridge, name, swap):
                    direct = metric(tiny_bridge(clean))[0]
                torch.testing.assert_close(grid[layer, head], direct, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(grid, base.expand_as(grid)), "no head patch changed the metric: the test shows nothing"


def test_patching_the_first_layer_at_every_differing_position_gives_the_counterfactual(tiny_bridge, tiny_tokens):
    """Prompts that differ at one position: patching it before layer 0 is the counterfactual run itself (effect 1)."""
    clean = tiny_tokens[:1]
    counterfactual = clean.clone()
    counterfactual[0, 3] = tiny_tokens[1, 3] if tiny_tokens[1, 3] != clean[0, 3] else clean[0, 3] + 1
    a, b = int(clean[0, 3]), int(counterfactual[0, 3])

    def metric(logits):
        return logits[:, -1, a] - logits[:, -1, b]

    with torch.no_grad():
        clean_value, cf_value = metric(tiny_bridge(clean))[0], metric(tiny_bridge(counterfactual))[0]
    _, cf_cache = tiny_bridge.run_with_cache(counterfactual)
    effect = patching.normalised_effect(patching.residual_patching(tiny_bridge, clean, cf_cache, metric, [0]),
                                        clean_value, cf_value)
    assert effect[0, 3] == pytest.approx(1.0, abs=1e-3)
    others = torch.cat([effect[0, :3], effect[0, 4:]])
    assert others.abs().max() < 1e-3


def test_normalised_effect_and_its_errors(tiny_bridge, tiny_tokens, pair):
    assert patching.normalised_effect(torch.tensor([4.0, 2.0, -2.0]), 4.0, -2.0).tolist() == pytest.approx([0, 1 / 3, 1])
    with pytest.raises(ValueError, match="no effect to normalise"):
        patching.normalised_effect(torch.tensor([1.0]), 1.0, 1.0)
    _, short_cache = tiny_bridge.run_with_cache(tiny_tokens[1:2, :-1])
    with pytest.raises(ValueError, match="same length"):
        patching.residual_patching(tiny_bridge, tiny_tokens[:1], short_cache, pair[2])


# ---------------------------------------------------------------------------------------------- IOI batches


@pytest.fixture(scope="module")
def ioi(tiny_bridge, smoke_world):
    return patching.ioi_patching_batch(smoke_world.ioi_eval[:8], tiny_bridge.tokenizer)


def test_ioi_batch_marks_the_names_and_aligns_the_counterfactual(ioi, smoke_world):
    rows = torch.arange(len(ioi))
    assert (ioi.tokens[rows, ioi.labels["io_pos"]] == ioi.answer_ids).all()
    assert (ioi.tokens[rows, ioi.labels["s1_pos"]] == ioi.foil_ids).all()
    assert (ioi.tokens[rows, ioi.labels["s2_pos"]] == ioi.foil_ids).all()
    assert (ioi.lengths == ioi.counterfactual.lengths).all()
    differs = ioi.tokens != ioi.counterfactual.tokens
    assert (differs.sum(1) == 1).all() and differs[rows, ioi.labels["io_pos"]].all()  # "io": only the IO changes


def test_abc_corruption_replaces_the_three_names_by_three_others(tiny_bridge, smoke_world):
    batch = patching.ioi_patching_batch(smoke_world.ioi_eval[:8], tiny_bridge.tokenizer, corruption="abc",
                                        names=smoke_world.ioi_heldout_names, seed=1)
    rows = torch.arange(len(batch))
    cf = batch.counterfactual.tokens
    names = torch.stack([cf[rows, batch.labels[k]] for k in ("io_pos", "s1_pos", "s2_pos")], 1)
    assert ((batch.tokens != cf).sum(1) == 3).all()
    assert all(len(set(r.tolist())) == 3 for r in names)
    assert not (names == batch.answer_ids[:, None]).any() and not (names == batch.foil_ids[:, None]).any()
    with pytest.raises(ValueError, match="corruption must be one of"):
        patching.ioi_patching_batch(smoke_world.ioi_eval[:2], tiny_bridge.tokenizer, corruption="swap")


def test_ioi_metric_reads_each_rows_final_position_of_a_tiled_batch(tiny_bridge, ioi):
    logits = tiny_bridge(ioi.tokens)
    once = patching.ioi_metric(ioi)(logits)
    rows = torch.arange(len(ioi))
    final = logits[rows, ioi.final_positions]
    torch.testing.assert_close(once, final[rows, ioi.answer_ids] - final[rows, ioi.foil_ids])
    torch.testing.assert_close(patching.ioi_metric(ioi)(logits.repeat(3, 1, 1)), once.repeat(3))
    assert patching.normalised_metric(torch.tensor([4.0, 1.0]), 4.0, -2.0).tolist() == pytest.approx([1.0, 0.5])


def test_a_batch_of_prompts_gives_the_mean_of_their_patching_maps(tiny_bridge, ioi):
    group = patching.same_length_groups(ioi)
    index = next(iter(group.values()))
    sub = ioi.select(index)
    width = int(sub.lengths[0])
    tokens, cf_tokens = sub.tokens[:, :width], sub.counterfactual.tokens[:, :width]
    _, cf_cache = tiny_bridge.run_with_cache(cf_tokens)
    a, b = int(sub.answer_ids[0]), int(sub.foil_ids[0])

    def metric(logits):
        return logits[:, -1, a] - logits[:, -1, b]

    for fn in (patching.residual_patching, patching.attn_out_patching):
        together = fn(tiny_bridge, tokens, cf_cache, metric)
        singles = torch.stack([fn(tiny_bridge, tokens[i:i + 1], {k: v[i:i + 1] for k, v in cf_cache.items()}, metric)
                               for i in range(len(tokens))]).mean(0)
        torch.testing.assert_close(together, singles, atol=1e-4, rtol=1e-4)


def test_attn_out_patching_equals_one_patch_per_run(tiny_bridge, pair):
    clean, cf_cache, metric = pair
    grid = patching.attn_out_patching(tiny_bridge, clean, cf_cache, metric)
    with torch.no_grad():
        for layer in range(tiny_bridge.cfg.n_layers):
            name = hooks.attn_out(layer)
            for pos in range(clean.shape[1]):
                with interventions.patched(tiny_bridge, name, cf_cache[name], positions=[pos]):
                    direct = metric(tiny_bridge(clean))[0]
                torch.testing.assert_close(grid[layer, pos], direct, atol=1e-4, rtol=1e-4)


def test_head_patching_of_ragged_prompts_at_each_final_position(tiny_bridge, ioi):
    _, cf_cache = tiny_bridge.run_with_cache(ioi.counterfactual.tokens)
    metric = patching.ioi_metric(ioi)
    grid = patching.head_patching(tiny_bridge, ioi.tokens, cf_cache, metric, position=patching.position_mask(ioi))
    rows = torch.arange(len(ioi))
    with torch.no_grad():
        for layer in range(tiny_bridge.cfg.n_layers):
            name = hooks.z(layer)
            for head in range(tiny_bridge.cfg.n_heads):
                def swap(z, head=head, name=name):
                    z = z.clone()
                    final = ioi.final_positions
                    z[rows, final, head] = cf_cache[name][rows, final, head]
                    return z

                with interventions.replaced(tiny_bridge, name, swap):
                    direct = metric(tiny_bridge(ioi.tokens)).mean()
                torch.testing.assert_close(grid[layer, head], direct, atol=1e-4, rtol=1e-4)


def test_patching_a_head_whose_output_is_zeroed_changes_nothing(tiny_bridge, ioi):
    """With head 1.0's rows of the output projection zeroed, its output is nothing, so patching it is a no-op; the
    other heads still matter (else the test would show nothing)."""
    attn = tiny_bridge.blocks[1].attn.original_component
    d_head = tiny_bridge.cfg.d_head
    weight = attn.c_proj.weight
    saved = weight.detach().clone()
    metric = patching.ioi_metric(ioi)
    try:
        with torch.no_grad():
            weight[:d_head] = 0  # Conv1D: [in = head-concatenated z, out = d_model]
            clean = metric(tiny_bridge(ioi.tokens)).mean()
        _, cf_cache = tiny_bridge.run_with_cache(ioi.counterfactual.tokens)
        grid = patching.head_patching(tiny_bridge, ioi.tokens, cf_cache, metric, position=None)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert grid[1, 0].item() == pytest.approx(clean.item(), abs=1e-5)
    assert (grid - clean).abs().max() > 1e-4  # 5e-4 on the tiny random model: well above the no-op's 1e-5


def test_head_roles_name_heads_by_where_their_patch_matters():
    drop_all = torch.tensor([[0.0, 0.1], [0.6, -0.3]])
    drop_final = torch.tensor([[0.0, 0.0], [0.5, -0.3]])
    drop_s2 = torch.tensor([[0.0, 0.2], [0.1, 0.0]])
    to_io = torch.tensor([[0.1, 0.1], [0.8, 0.1]])
    to_s2 = torch.tensor([[0.1, 0.1], [0.1, 0.7]])
    roles = patching.head_roles(drop_all, drop_final, drop_s2, to_io, to_s2, top=3)
    assert [(r.name, r.role) for r in roles] == [("1.0", "name mover"), ("1.1", "negative S-inhibition"),
                                                  ("0.1", "S2 position")]


def test_running_from_a_layer_equals_the_whole_model(tiny_bridge, ioi):
    for layer in range(tiny_bridge.cfg.n_layers):
        assert patching.check_run_from_layer(tiny_bridge, ioi.tokens, layer) < 1e-4
    _, cache = tiny_bridge.run_with_cache(ioi.tokens, names_filter=[hooks.resid_pre(1)])
    final = patching.run_from_layer(tiny_bridge, 1, cache[hooks.resid_pre(1)], ioi.final_positions)
    torch.testing.assert_close(final, tiny_bridge(ioi.tokens)[torch.arange(len(ioi)), ioi.final_positions],
                               atol=1e-5, rtol=0)


def test_ioi_head_analysis_and_position_maps_on_the_tiny_model(tiny_bridge, smoke_world):
    abc = patching.ioi_patching_batch(smoke_world.ioi_eval[:6], tiny_bridge.tokenizer, corruption="abc",
                                      names=smoke_world.ioi_heldout_names)
    analysis = patching.ioi_head_analysis(tiny_bridge, abc, top=3)
    shape = (tiny_bridge.cfg.n_layers, tiny_bridge.cfg.n_heads)
    assert analysis.drop_all.shape == analysis.drop_final.shape == analysis.attention_to_io.shape == shape
    assert len(analysis.roles) == 3 and all(0 <= r.attention_to_io <= 1 for r in analysis.roles)
    maps = patching.ioi_position_maps(tiny_bridge, patching.ioi_patching_batch(smoke_world.ioi_eval[:12],
                                                                                tiny_bridge.tokenizer))
    assert maps.residual.shape == maps.attn_out.shape == (tiny_bridge.cfg.n_layers, len(maps.labels))
    assert sum(label.endswith(("(IO)", "(S1)", "(S2)", "(final)")) for label in maps.labels) == 4
    assert maps.residual[0, [i for i, t in enumerate(maps.labels) if t.endswith("(IO)")][0]] == pytest.approx(1.0, abs=1e-3)
