import numpy as np
import pytest
import torch

from workbench import hooks


def test_helpers_name_real_hook_points(tiny_bridge):
    for fn in [hooks.resid_pre, hooks.resid_mid, hooks.resid_post, hooks.mlp_in, hooks.mlp_pre, hooks.mlp_post,
               hooks.mlp_out, hooks.attn_out, hooks.attn_pattern, hooks.z]:
        assert hooks.check_hook_name(tiny_bridge, fn(1)) == fn(1)


def test_wrong_hook_name_lists_the_closest_valid_names(tiny_bridge):
    with pytest.raises(ValueError, match=r"blocks\.0\.hook_resid_pre"):
        hooks.check_hook_name(tiny_bridge, "blocks.0.hook_resid_prе")  # Cyrillic 'е'
    with pytest.raises(ValueError, match="Closest valid names"):
        hooks.cache_activations(tiny_bridge, torch.zeros(1, 3, dtype=torch.long), ["blocks.0.resid_pre"])


def test_cache_matches_run_with_cache_and_skips_bos(tiny_bridge, tiny_tokens):
    names = [hooks.resid_pre(1), hooks.z(0)]
    cache = hooks.cache_activations(tiny_bridge, tiny_tokens, names, batch_size=4, progress=False)
    _, ref = tiny_bridge.run_with_cache(tiny_tokens, names_filter=names)
    n, pos = tiny_tokens.shape
    assert len(cache) == n * (pos - 1)
    assert torch.allclose(cache[names[0]], ref[names[0]][:, 1:].reshape(-1, ref[names[0]].shape[-1]), atol=1e-6)
    assert cache[names[1]].shape[-1] == ref[names[1]].shape[-2] * ref[names[1]].shape[-1]
    assert (cache.positions > 0).all()


def test_large_cache_streams_to_memmap_or_says_how(tiny_bridge, tiny_tokens, tmp_path):
    name = hooks.resid_post(0)
    with pytest.raises(ValueError, match="store_dir"):
        hooks.cache_activations(tiny_bridge, tiny_tokens, [name], max_memory_mb=0, progress=False)
    on_disk = hooks.cache_activations(tiny_bridge, tiny_tokens, [name], max_memory_mb=0, store_dir=tmp_path, progress=False)
    in_memory = hooks.cache_activations(tiny_bridge, tiny_tokens, [name], progress=False)
    assert (tmp_path / f"{name}.npy").exists()
    assert np.allclose(np.load(tmp_path / f"{name}.npy"), in_memory[name].numpy())
    assert torch.equal(on_disk[name], in_memory[name])
