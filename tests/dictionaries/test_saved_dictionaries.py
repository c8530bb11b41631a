"""Saved dictionaries are SAELens files that SAELens splices as they are, and that our splice agrees with."""

from pathlib import Path

import pytest
import torch
from sae_lens import SAE
from sae_lens.analysis.sae_transformer_bridge import SAETransformerBridge

import workbench
from workbench import hooks, interventions
from workbench.dictionaries import make_training_sae, save_dictionary
from workbench.paths import data_dir, embedded_model_dir

SAVED = sorted(p for p in (data_dir() / "dictionaries").glob("*") if (p / "cfg.json").exists())


def _splices_like_the_clean_run_in_saelens(bridge: SAETransformerBridge, sae: SAE, tokens: torch.Tensor) -> None:
    clean = bridge(tokens)
    ours = interventions.Splice(sae, sae.cfg.metadata.hook_name, sae.cfg.metadata.hook_name_out, use_error_term=False)
    # ours first: after SAELens's run_with_saes, that bridge's hook_dict keeps a stale hook point there, whose
    # hooks never run (our fired check raises if one is used)
    with interventions.spliced(bridge, ours):
        our_replaced = bridge(tokens)
    with_error = bridge.run_with_saes(tokens, saes=[sae], use_error_term=True)
    replaced = bridge.run_with_saes(tokens, saes=[sae], use_error_term=False)
    assert torch.allclose(with_error, clean, atol=1e-4)
    assert (replaced - clean).abs().max() > 1e-3
    assert torch.allclose(our_replaced, replaced, atol=1e-5)  # our splice is SAELens's splice


@pytest.fixture()
def embedded_saelens_bridge():
    bridge = SAETransformerBridge.boot_transformers(str(embedded_model_dir()), device="cpu")
    bridge.eval()
    return bridge


@pytest.mark.parametrize("path", SAVED, ids=[p.name for p in SAVED])
def test_every_committed_dictionary_splices_through_saelens_with_no_edits(path: Path, embedded_saelens_bridge):
    sae = SAE.load_from_disk(str(path), device="cpu")
    assert sae.cfg.metadata.model_name == "embedded" and sae.cfg.metadata.hook_name
    tokens = embedded_saelens_bridge.to_tokens("Q: Where was Brea born?\nA:")
    _splices_like_the_clean_run_in_saelens(embedded_saelens_bridge, sae, tokens)


def test_committed_dictionaries_exist():
    assert len(SAVED) >= 4, f"expected the dictionaries of notebook 03 under {data_dir() / 'dictionaries'}"


@pytest.mark.parametrize("arch", ["standard", "gated_paper", "topk_sparse", "transcoder"])
def test_a_freshly_saved_dictionary_splices_through_saelens(arch, tiny_model_dir, tiny_bridge, tiny_tokens, tmp_path):
    d = tiny_bridge.cfg.d_model
    extra = {"d_out": d} if arch == "transcoder" else {}
    sae = make_training_sae(arch, d_in=d, d_sae=64, **({"k": 8} if arch == "topk_sparse" else {}), **extra)
    with torch.no_grad():
        getattr(sae, "b_enc", getattr(sae, "b_gate", None)).fill_(0.1)  # features fire at initialisation
    hook_in, hook_out = (hooks.mlp_in(1), hooks.mlp_out(1)) if arch == "transcoder" else (hooks.resid_pre(1), None)
    save_dictionary(sae, tmp_path / arch, hook_name=hook_in, hook_name_out=hook_out, model=tiny_bridge)
    bridge = SAETransformerBridge.boot_transformers(str(tiny_model_dir), device="cpu")
    loaded = SAE.load_from_disk(str(tmp_path / arch), device="cpu")
    _splices_like_the_clean_run_in_saelens(bridge, loaded, tiny_tokens)
    assert workbench.load_dictionary(tmp_path / arch, model=tiny_bridge).cfg.d_in == d


def test_a_dictionary_for_another_model_or_width_fails_naming_both(tiny_bridge, tmp_path):
    d = tiny_bridge.cfg.d_model
    sae = make_training_sae("standard", d_in=d, d_sae=16)
    save_dictionary(sae, tmp_path / "other_model", hook_name=hooks.resid_pre(0), model="gpt2")
    with pytest.raises(ValueError, match=r"trained on model 'gpt2', but this model is '.*tiny"):
        workbench.load_dictionary(tmp_path / "other_model", model=tiny_bridge)
    narrow = make_training_sae("standard", d_in=d // 2, d_sae=16)
    save_dictionary(narrow, tmp_path / "narrow", hook_name=hooks.resid_pre(0), model=tiny_bridge)
    with pytest.raises(ValueError, match=rf"reads width {d // 2} but blocks.0.hook_resid_pre .* has width {d}"):
        workbench.load_dictionary(tmp_path / "narrow", model=tiny_bridge)
