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
