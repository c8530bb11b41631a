"""The one training loop: it recovers a planted dictionary, resumes exactly, and applies schedules."""

import dataclasses

import pytest
import torch

from workbench.dictionaries import make_training_sae
from workbench.dictionaries.training import (
    DictionaryTrainConfig,
    Stage,
    TensorSource,
    coefficient_at,
    lr_at,
    stage_at,
    train_dictionary,
)


def planted(n=30_000, d=32, n_features=96, k=3, seed=0):
    """Inputs that are sparse non-negative combinations of known unit directions."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n_features, d, generator=g), dim=-1)
    idx = torch.stack([torch.randperm(n_features, generator=g)[:k] for _ in range(n)])
    codes = torch.zeros(n, n_features).scatter_(1, idx, torch.rand(n, k, generator=g) * 2 + 0.5)
    return codes @ directions, directions


CFG = DictionaryTrainConfig(n_steps=1200, batch_size=512, lr=3e-3, log_every=100, dead_window=200)


@pytest.fixture(scope="module")
def planted_run():
    torch.manual_seed(0)
    acts, directions = planted()
    sae = make_training_sae("standard", d_in=32, d_sae=192, l1_coefficient=1.0)
    result = train_dictionary(sae, TensorSource(acts), CFG, progress=False)
    return sae, result, acts, directions


def test_loop_lowers_the_loss_and_recovers_planted_features(planted_run):
    sae, result, _, directions = planted_run
    assert result.history[-1]["loss"] < 0.9 * result.history[0]["loss"]
    assert result.history[-1]["explained_variance"] > 0.85 and result.history[-1]["l0"] < 15
    decoder = torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1)
    best_cos = (directions @ decoder.T).max(dim=1).values
    assert (best_cos > 0.9).float().mean() > 0.9, f"recovered {(best_cos > 0.9).float().mean():.2f} of planted features"


def test_trained_sae_reads_raw_activations_after_the_scale_is_folded(planted_run):
    sae, result, acts, _ = planted_run
    assert result.activation_scale != 1.0
    x = acts[:2000]
    x_hat = sae.decode(sae.encode(x))
    assert 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum() > 0.85


@pytest.mark.parametrize("arch", ["standard", "gated_paper", "topk", "topk_sparse"])
def test_resume_equals_an_uninterrupted_run(arch, tmp_path):
    acts, _ = planted(n=4000)
    cfg = dataclasses.replace(CFG, n_steps=40, batch_size=256, checkpoint_every=10, resample_every=20, dead_window=5)
    extra = {"k": 3} if arch.startswith("topk") else {}
    torch.manual_seed(1)
    a = make_training_sae(arch, d_in=32, d_sae=64, **extra)
    torch.manual_seed(1)
    b = make_training_sae(arch, d_in=32, d_sae=64, **extra)
    train_dictionary(a, TensorSource(acts, seed=3), cfg, progress=False)
    train_dictionary(b, TensorSource(acts, seed=3), cfg, checkpoint_dir=tmp_path, max_steps=25, progress=False)
    resumed = train_dictionary(b, TensorSource(acts, seed=3), cfg, checkpoint_dir=tmp_path, progress=False)
    assert resumed.steps == 40
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), f"{name} differs after resume"


def test_sparse_topk_recovers_planted_features_through_the_loop():
    torch.manual_seed(0)
    acts, directions = planted()
    sae = make_training_sae("topk_sparse", d_in=32, d_sae=192, k=3)
    result = train_dictionary(sae, TensorSource(acts), dataclasses.replace(CFG, n_steps=800), progress=False)
    assert result.history[-1]["l0"] == 3 and result.history[-1]["explained_variance"] > 0.85
    best_cos = (directions @ torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1).T).max(dim=1).values
    assert (best_cos > 0.9).float().mean() > 0.9, f"recovered {(best_cos > 0.9).float().mean():.2f} of planted features"


def test_resampling_revives_dead_features():
    acts, _ = planted(n=8000)
    sae = make_training_sae("standard", d_in=32, d_sae=64, l1_coefficient=1.0)
    with torch.no_grad():
        sae.b_enc[:32] = -100.0  # half the features can never fire
    cfg = dataclasses.replace(CFG, n_steps=300, batch_size=256, dead_window=50, resample_every=100)
    result = train_dictionary(sae, TensorSource(acts), cfg, progress=False)
    assert result.dead_fraction < 0.25
    no_resample = make_training_sae("standard", d_in=32, d_sae=64, l1_coefficient=1.0)
    with torch.no_grad():
        no_resample.b_enc[:32] = -100.0
    dead = train_dictionary(no_resample, TensorSource(acts), dataclasses.replace(cfg, resample_every=0), progress=False)
    assert dead.dead_fraction >= 0.5


def test_schedules_and_stages():
    cfg = DictionaryTrainConfig(n_steps=100, lr=1.0, lr_warmup_steps=10, lr_decay_fraction=0.5,
                                stages=(Stage("reconstruct", 30), Stage("align", 70, {"binding": 1.0})))
    assert cfg.total_steps == 100
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(20, cfg) == 1.0 and lr_at(99, cfg) < 0.05
    assert stage_at(10, cfg).name == "reconstruct" and stage_at(30, cfg).coefficients == {"binding": 1.0}
    assert coefficient_at(2.0, 4, warmup=10) == pytest.approx(1.0) and coefficient_at(2.0, 50, warmup=10) == 2.0


def test_mismatched_shapes_and_bad_configs_are_named():
    sae = make_training_sae("standard", d_in=8, d_sae=16)
    with pytest.raises(ValueError, match="d=32 but the SAE reads d_in=8"):
        train_dictionary(sae, TensorSource(torch.randn(100, 32)), CFG, progress=False)
    with pytest.raises(ValueError, match=r"\[n_tokens, d\]"):
        TensorSource(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="lr_decay_fraction"):
        DictionaryTrainConfig(lr_decay_fraction=2)


def test_sparse_topk_trains_under_bf16_autocast():
    acts, _ = planted(n=4000)
    sae = make_training_sae("topk_sparse", d_in=32, d_sae=64, k=3)
    result = train_dictionary(sae, TensorSource(acts), dataclasses.replace(CFG, n_steps=30, bf16=True, log_every=10),
                              progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"] and result.history[-1]["l0"] == 3


def test_bf16_autocast_trains_as_well_on_planted_features():
    acts, directions = planted(n=10_000)
    sae = make_training_sae("standard", d_in=32, d_sae=192, l1_coefficient=1.0)
    result = train_dictionary(sae, TensorSource(acts), dataclasses.replace(CFG, bf16=True), progress=False)
    assert sae.W_dec.dtype == torch.float32
    assert result.history[-1]["explained_variance"] > 0.8
    best_cos = (directions @ torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1).T).max(dim=1).values
    assert (best_cos > 0.9).float().mean() > 0.8


def test_model_source_streams_the_models_activations_deterministically(tiny_bridge, smoke_world):
    from workbench import hooks
    from workbench.datasets.corpus import token_sequences
    from workbench.dictionaries.training import ModelActivationSource

    tokens = token_sequences(smoke_world, tiny_bridge.tokenizer, 12, seq_len=32)
    hook = hooks.resid_pre(1)
    source = ModelActivationSource(tiny_bridge, tokens, hook, sequences_per_chunk=4, seed=1)
    again = ModelActivationSource(tiny_bridge, tokens, hook, sequences_per_chunk=4, seed=1)
    assert source.d == tiny_bridge.cfg.d_model
    every = hooks.cache_activations(tiny_bridge, tokens, [hook], progress=False)[hook]
    for step in [0, 3, 7, 2]:  # out of order, across chunks and epochs
        b = source.batch(step, 16)
        assert torch.equal(b, again.batch(step, 16))
        assert torch.cdist(b, every).min(dim=1).values.max() < 1e-3  # a real activation (rows differ by ~0.1)
    sae = make_training_sae("standard", d_in=tiny_bridge.cfg.d_model, d_sae=64)
    result = train_dictionary(sae, source, dataclasses.replace(CFG, n_steps=10, batch_size=16), progress=False)
    assert result.steps == 10
    with pytest.raises(ValueError, match="Closest valid names"):
        ModelActivationSource(tiny_bridge, tokens, "blocks.1.resid_pre")
