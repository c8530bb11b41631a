import pytest
import torch

from workbench import hooks, interventions


def test_patching_a_full_activation_from_another_run_reproduces_that_run(tiny_bridge, tiny_tokens):
    name = hooks.resid_pre(1)
    _, other = tiny_bridge.run_with_cache(tiny_tokens.flip(0), names_filter=[name])
    with interventions.patched(tiny_bridge, name, other[name]):
        patched = tiny_bridge(tiny_tokens)
    # everything downstream of layer 1 sees the other run's residual; only the logits computed from it matter
    assert torch.allclose(patched, tiny_bridge(tiny_tokens.flip(0)), atol=1e-5)
    assert not tiny_bridge.hook_dict[name].fwd_hooks  # hooks removed


def test_patching_some_positions_leaves_earlier_positions_unchanged(tiny_bridge, tiny_tokens):
    name = hooks.resid_pre(0)
    clean = tiny_bridge(tiny_tokens)
    with interventions.patched(tiny_bridge, name, torch.zeros(tiny_tokens.shape[0], 1, tiny_bridge.cfg.d_model), positions=[-1]):
        patched = tiny_bridge(tiny_tokens)
    assert torch.allclose(patched[:, :-1], clean[:, :-1], atol=1e-6)
    assert not torch.allclose(patched[:, -1], clean[:, -1], atol=1e-3)


def test_adding_and_replacing_check_shapes_and_clean_up_on_error(tiny_bridge, tiny_tokens):
    name = hooks.resid_post(0)
    with pytest.raises(ValueError, match="d=3"):
        with interventions.added(tiny_bridge, name, torch.ones(3)):
            tiny_bridge(tiny_tokens)
    with pytest.raises(ValueError, match="expected"):
        with interventions.replaced(tiny_bridge, name, lambda a: a[:, :-1]):
            tiny_bridge(tiny_tokens)
    clean = tiny_bridge(tiny_tokens)
    with interventions.replaced(tiny_bridge, name, lambda a: a.clone()):
        assert torch.allclose(tiny_bridge(tiny_tokens), clean, atol=1e-6)
    with interventions.added(tiny_bridge, name, torch.ones(tiny_bridge.cfg.d_model), scale=0.0):
        assert torch.allclose(tiny_bridge(tiny_tokens), clean, atol=1e-6)
    assert torch.allclose(tiny_bridge(tiny_tokens), clean)


def test_patch_of_wrong_shape_names_both_shapes(tiny_bridge, tiny_tokens):
    with pytest.raises(ValueError, match=r"\(7, 5\)"):
        with interventions.patched(tiny_bridge, hooks.resid_pre(0), torch.zeros(7, 5)):
            tiny_bridge(tiny_tokens)


def _sae(d_in: int, d_sae: int = 64, seed: int = 0):
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():  # SAELens initialises b_dec at zero; a non-zero one catches a decode that drops it
        sae.b_dec.normal_()
    return sae


def _transcoder(d_in: int, d_sae: int = 64):
    from sae_lens import Transcoder, TranscoderConfig

    torch.manual_seed(1)
    return Transcoder(TranscoderConfig(d_in=d_in, d_sae=d_sae, d_out=d_in, apply_b_dec_to_input=False))


def _dictionaries(model, tokens):
    from workbench.dictionaries import baselines

    d = model.cfg.d_model
    _, cache = model.run_with_cache(tokens, names_filter=[hooks.resid_pre(1)])
    pca = baselines.pca(cache[hooks.resid_pre(1)].reshape(-1, d), n_components=8)
    return {"sae": interventions.Splice(_sae(d), hooks.resid_pre(1)),
            "transcoder": interventions.Splice(_transcoder(d), hooks.mlp_in(1), hooks.mlp_out(1)),
            "pca": interventions.Splice(pca, hooks.resid_pre(1))}


@pytest.mark.parametrize("kind", ["sae", "transcoder", "pca"])
def test_splice_without_edit_reproduces_the_clean_run_and_without_error_term_does_not(tiny_bridge, tiny_tokens, kind):
    clean = tiny_bridge(tiny_tokens)
    splice = _dictionaries(tiny_bridge, tiny_tokens)[kind]
    with interventions.spliced(tiny_bridge, splice):
        kept = tiny_bridge(tiny_tokens)
    assert torch.allclose(kept, clean, atol=1e-5)
    assert splice.codes is not None and splice.codes.shape[:2] == tiny_tokens.shape
    splice.use_error_term = False
    with interventions.spliced(tiny_bridge, splice):
        replaced = tiny_bridge(tiny_tokens)
    assert (replaced - clean).abs().max() > 1e-2


def test_transcoder_splice_without_error_term_is_the_transcoder_in_place_of_the_mlp(tiny_bridge, tiny_tokens):
    tc = _transcoder(tiny_bridge.cfg.d_model)
    _, cache = tiny_bridge.run_with_cache(tiny_tokens, names_filter=[hooks.mlp_in(1)])
    expected_out = tc.decode(tc.encode(cache[hooks.mlp_in(1)]))
    with interventions.replaced(tiny_bridge, hooks.mlp_out(1), lambda act: expected_out.detach()):
        expected = tiny_bridge(tiny_tokens)
    splice = interventions.Splice(tc, hooks.mlp_in(1), hooks.mlp_out(1), use_error_term=False)
    with interventions.spliced(tiny_bridge, splice):
        assert torch.allclose(tiny_bridge(tiny_tokens), expected, atol=1e-5)


def test_ablating_an_active_feature_changes_the_run_by_exactly_its_decoded_contribution(tiny_bridge, tiny_tokens):
    """Ground truth: zeroing feature f at position p must equal subtracting code * W_dec[f] there (an error
    term computed after the edit would cancel the ablation; SAELens had that bug before 6.34.2)."""
    sae, name, p = _sae(tiny_bridge.cfg.d_model), hooks.resid_pre(1), 3
    probe = interventions.Splice(sae, name)
    with interventions.spliced(tiny_bridge, probe):
        clean = tiny_bridge(tiny_tokens)
    f = int(probe.codes[0, p].argmax())
    assert probe.codes[0, p, f] > 0
    delta = torch.zeros(*tiny_tokens.shape, tiny_bridge.cfg.d_model)
    delta[:, p] = -probe.codes[:, p, f, None] * sae.W_dec[f].detach()
    with interventions.spliced(tiny_bridge, interventions.Splice(sae, name, edit=interventions.zero_features([f], [p]))):
        ablated = tiny_bridge(tiny_tokens)
    with interventions.replaced(tiny_bridge, name, lambda act: act + delta):
        expected = tiny_bridge(tiny_tokens)
    assert (ablated - clean).abs().max() > 1e-3
    assert torch.allclose(ablated, expected, atol=1e-5)
    assert torch.allclose(ablated[:, :p], clean[:, :p], atol=1e-6)  # causal: earlier positions untouched


def test_several_splices_at_once(tiny_bridge, tiny_tokens):
    clean = tiny_bridge(tiny_tokens)
    splices = [interventions.Splice(_transcoder(tiny_bridge.cfg.d_model), hooks.mlp_in(layer), hooks.mlp_out(layer))
               for layer in range(tiny_bridge.cfg.n_layers)]
    with interventions.spliced(tiny_bridge, *splices):
        assert torch.allclose(tiny_bridge(tiny_tokens), clean, atol=1e-5)
    for s in splices:
        s.use_error_term = False
    with interventions.spliced(tiny_bridge, *splices):
        assert (tiny_bridge(tiny_tokens) - clean).abs().max() > 1e-2


def test_splice_positions_leave_the_other_positions_alone(tiny_bridge, tiny_tokens):
    clean = tiny_bridge(tiny_tokens)
    keep_bos = tiny_tokens != tiny_bridge.tokenizer.bos_token_id
    splice = interventions.Splice(_sae(tiny_bridge.cfg.d_model), hooks.resid_pre(0), use_error_term=False,
                                  positions=keep_bos)
    with interventions.spliced(tiny_bridge, splice):
        out = tiny_bridge(tiny_tokens)
    assert torch.allclose(out[:, 0], clean[:, 0], atol=1e-6)  # BOS kept
    assert (out[:, 1:] - clean[:, 1:]).abs().max() > 1e-2


def test_splice_of_the_wrong_width_names_both_widths(tiny_bridge, tiny_tokens):
    with pytest.raises(ValueError, match=r"width 16 .* width 32"):
        with interventions.spliced(tiny_bridge, interventions.Splice(_sae(16), hooks.resid_pre(0))):
            tiny_bridge(tiny_tokens)


def test_a_hook_that_never_fires_raises(tiny_bridge, tiny_tokens):
    # accepted by the bridge, but never run in a forward pass
    with pytest.raises(interventions.HookNeverFiredError, match="never fired"):
        with interventions.added(tiny_bridge, "blocks.0.attn.qkv.hook_in", torch.ones(1)):
            tiny_bridge(tiny_tokens)
    with pytest.raises(interventions.HookNeverFiredError, match="stop_at_layer"):
        with interventions.added(tiny_bridge, hooks.resid_post(1), torch.ones(tiny_bridge.cfg.d_model)):
            tiny_bridge(tiny_tokens, stop_at_layer=1)
    assert not tiny_bridge.hook_dict[hooks.resid_post(1)].fwd_hooks


def test_patching_an_attention_pattern_at_a_query_position_changes_only_that_position(tiny_bridge, tiny_tokens):
    name, p = hooks.attn_pattern(0), 4
    _, clean = tiny_bridge.run_with_cache(tiny_tokens, names_filter=[hooks.z(0)])
    uniform = torch.tril(torch.ones(tiny_tokens.shape[1], tiny_tokens.shape[1]))
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(tiny_tokens.shape[0], tiny_bridge.cfg.n_heads, -1, -1)
    with interventions.patched(tiny_bridge, name, uniform, positions=[p]):
        _, patched = tiny_bridge.run_with_cache(tiny_tokens, names_filter=[hooks.z(0)])
    changed = (patched[hooks.z(0)] - clean[hooks.z(0)]).abs().amax(dim=(0, 2, 3))
    assert changed[p] > 1e-4
    assert torch.all(changed[torch.arange(len(changed)) != p] < 1e-6)
