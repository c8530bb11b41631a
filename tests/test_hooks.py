import numpy as np
import pytest
import torch

from workbench import hooks


@pytest.fixture()
def tokens(tiny_bridge, smoke_world):
    prompts = [q.prompt for q in smoke_world.qa_split("unseen_template") if q.template_id == 2][:6]
    toks = [tiny_bridge.to_tokens(p) for p in prompts]
    n = min(t.shape[1] for t in toks)
    return torch.cat([t[:, :n] for t in toks])


def test_helpers_name_real_hook_points(tiny_bridge):
    for fn in [hooks.resid_pre, hooks.resid_mid, hooks.resid_post, hooks.mlp_in, hooks.mlp_pre, hooks.mlp_post,
               hooks.mlp_out, hooks.attn_out, hooks.attn_pattern, hooks.z]:
        assert hooks.check_hook_name(tiny_bridge, fn(1)) == fn(1)


def test_wrong_hook_name_lists_the_closest_valid_names(tiny_bridge):
    with pytest.raises(ValueError, match=r"blocks\.0\.hook_resid_pre"):
        hooks.check_hook_name(tiny_bridge, "blocks.0.hook_resid_prе")  # Cyrillic 'е'
    with pytest.raises(ValueError, match="Closest valid names"):
        hooks.cache_activations(tiny_bridge, torch.zeros(1, 3, dtype=torch.long), ["blocks.0.resid_pre"])


def test_cache_matches_run_with_cache_and_skips_bos(tiny_bridge, tokens):
    names = [hooks.resid_pre(1), hooks.z(0)]
    cache = hooks.cache_activations(tiny_bridge, tokens, names, batch_size=4, progress=False)
    _, ref = tiny_bridge.run_with_cache(tokens, names_filter=names)
    n, pos = tokens.shape
    assert len(cache) == n * (pos - 1)
    assert torch.allclose(cache[names[0]], ref[names[0]][:, 1:].reshape(-1, ref[names[0]].shape[-1]), atol=1e-6)
    assert cache[names[1]].shape[-1] == ref[names[1]].shape[-2] * ref[names[1]].shape[-1]
    assert (cache.positions > 0).all()


def test_large_cache_streams_to_memmap_or_says_how(tiny_bridge, tokens, tmp_path):
    name = hooks.resid_post(0)
    with pytest.raises(ValueError, match="store_dir"):
        hooks.cache_activations(tiny_bridge, tokens, [name], max_memory_mb=0, progress=False)
    on_disk = hooks.cache_activations(tiny_bridge, tokens, [name], max_memory_mb=0, store_dir=tmp_path, progress=False)
    in_memory = hooks.cache_activations(tiny_bridge, tokens, [name], progress=False)
    assert (tmp_path / f"{name}.npy").exists()
    assert np.allclose(np.load(tmp_path / f"{name}.npy"), in_memory[name].numpy())
    assert torch.equal(on_disk[name], in_memory[name])


def test_patching_a_full_activation_from_another_run_reproduces_that_run(tiny_bridge, tokens):
    name = hooks.resid_pre(1)
    _, other = tiny_bridge.run_with_cache(tokens.flip(0), names_filter=[name])
    with hooks.patched(tiny_bridge, name, other[name]):
        patched = tiny_bridge(tokens)
    # everything downstream of layer 1 sees the other run's residual; only the logits computed from it matter
    assert torch.allclose(patched, tiny_bridge(tokens.flip(0)), atol=1e-5)
    assert not tiny_bridge.hook_dict[name].fwd_hooks  # hooks removed


def test_patching_some_positions_leaves_earlier_positions_unchanged(tiny_bridge, tokens):
    name = hooks.resid_pre(0)
    clean = tiny_bridge(tokens)
    with hooks.patched(tiny_bridge, name, torch.zeros(tokens.shape[0], 1, tiny_bridge.cfg.d_model), positions=[-1]):
        patched = tiny_bridge(tokens)
    assert torch.allclose(patched[:, :-1], clean[:, :-1], atol=1e-6)
    assert not torch.allclose(patched[:, -1], clean[:, -1], atol=1e-3)


def test_adding_and_replacing_check_shapes_and_clean_up_on_error(tiny_bridge, tokens):
    name = hooks.resid_post(0)
    with pytest.raises(ValueError, match="d=3"):
        with hooks.added(tiny_bridge, name, torch.ones(3)):
            tiny_bridge(tokens)
    with pytest.raises(ValueError, match="expected"):
        with hooks.replaced(tiny_bridge, name, lambda a: a[:, :-1]):
            tiny_bridge(tokens)
    clean = tiny_bridge(tokens)
    with hooks.replaced(tiny_bridge, name, lambda a: a.clone()):
        assert torch.allclose(tiny_bridge(tokens), clean, atol=1e-6)
    with hooks.added(tiny_bridge, name, torch.ones(tiny_bridge.cfg.d_model), scale=0.0):
        assert torch.allclose(tiny_bridge(tokens), clean, atol=1e-6)
    assert torch.allclose(tiny_bridge(tokens), clean)


def test_patch_of_wrong_shape_names_both_shapes(tiny_bridge, tokens):
    with pytest.raises(ValueError, match=r"\(7, 5\)"):
        with hooks.patched(tiny_bridge, hooks.resid_pre(0), torch.zeros(7, 5)):
            tiny_bridge(tokens)
