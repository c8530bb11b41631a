"""The one training loop: it recovers a planted dictionary, resumes exactly (resampling included), applies
schedules, hands targets and labels to the SAE, validates its config, and stops on non-finite numbers."""

import dataclasses

import pytest
import torch
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig

from workbench.dictionaries import make_training_sae
from workbench.dictionaries.training import (
    ActivationBatch,
    DictionaryStepInput,
    DictionaryTrainConfig,
    Stage,
    TensorSource,
    coefficient_at,
    resample_pool,
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


@pytest.mark.parametrize("pool", [1, 16])
def test_resume_after_a_resample_draws_the_same_resamples(pool, tmp_path):
    """Stopped at step 25, after the resamples of steps 10 and 20, and resumed: the resamples of steps 30 and 40
    must draw what the uninterrupted run draws (a generator seeded once at (re)start would not), from the same pool
    of batches (read again from the source)."""
    acts, _ = planted(n=4000)
    cfg = dataclasses.replace(CFG, n_steps=40, batch_size=256, checkpoint_every=10, resample_every=10, dead_window=5,
                              resample_until_fraction=1.0, resample_pool_batches=pool)
    torch.manual_seed(1)
    a = make_training_sae("topk", d_in=32, d_sae=128, k=2)  # k=2 of 128: many features stay dead
    torch.manual_seed(1)
    b = make_training_sae("topk", d_in=32, d_sae=128, k=2)
    uninterrupted = train_dictionary(a, TensorSource(acts, seed=3), cfg, progress=False)
    first = train_dictionary(b, TensorSource(acts, seed=3), cfg, checkpoint_dir=tmp_path, max_steps=25, progress=False)
    resumed = train_dictionary(b, TensorSource(acts, seed=3), cfg, checkpoint_dir=tmp_path, progress=False)
    assert any(step <= 25 for step, _ in first.resamples), f"no resample before the stop: {first.resamples}"
    assert any(step > 25 for step, _ in resumed.resamples), f"no resample after the resume: {resumed.resamples}"
    assert resumed.resamples == uninterrupted.resamples
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), f"{name} differs after a resume past a resample"


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
    assert result.dead_fraction < 0.25 and result.resamples[0] == (100, 32)
    no_resample = make_training_sae("standard", d_in=32, d_sae=64, l1_coefficient=1.0)
    with torch.no_grad():
        no_resample.b_enc[:32] = -100.0
    dead = train_dictionary(no_resample, TensorSource(acts), dataclasses.replace(cfg, resample_every=0), progress=False)
    assert dead.dead_fraction >= 0.5


def test_the_resample_pool_reads_the_last_batches_again_with_the_saes_predictions_now():
    acts = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    source = TensorSource(acts, targets=acts[:, :4] * 3, seed=2)
    sae = make_training_sae("transcoder", d_in=8, d_sae=16, d_out=4)
    pool = resample_pool(sae, source, step=5, batch_size=100, n_batches=3, scale=2.0)
    batches = [source.batch(s, 100) for s in (3, 4, 5)]  # steps 3, 4 and 5
    assert torch.equal(pool.inputs, 2.0 * torch.cat([b.inputs for b in batches]))
    assert torch.equal(pool.targets, 2.0 * torch.cat([b.targets for b in batches]))  # a transcoder's targets
    with torch.no_grad():
        assert torch.allclose(pool.prediction, sae.decode(sae.encode(pool.inputs)))
    early = resample_pool(sae, source, step=1, batch_size=100, n_batches=3, scale=1.0)
    assert torch.equal(early.inputs, torch.cat([source.batch(0, 100).inputs, source.batch(1, 100).inputs]))
    plain = resample_pool(make_training_sae("standard", d_in=8, d_sae=16), TensorSource(acts), 0, 100, 1, 1.0)
    assert torch.equal(plain.targets, plain.inputs) and len(plain.inputs) == 100  # an SAE predicts its inputs


def rare_directions(n=16_000, d=16, n_common=4, n_rare=48, p_rare=0.1, seed=0):
    """Every row is one of ``n_common`` directions; one row in ten adds a strong one of ``n_rare`` others, so a batch
    of 64 holds about six rare rows, of a few of the rare directions."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n_common + n_rare, d, generator=g), dim=-1)
    x = directions[torch.randint(0, n_common, (n,), generator=g)] * (1 + torch.rand(n, 1, generator=g))
    rare = torch.rand(n, generator=g) < p_rare
    x[rare] += 3 * directions[n_common + torch.randint(0, n_rare, (int(rare.sum()),), generator=g)]
    return x


def test_a_pool_of_batches_leaves_fewer_features_dead_than_the_current_batch():
    """Resampled from one batch, most dead TopK features restart on rows the live features already reconstruct and
    die again; from a pool of 16 batches, they land on rare directions nobody reconstructs, and fire on them."""
    from workbench.dictionaries import metrics

    acts = rare_directions()
    never_fire = {}
    for pool in (1, 16):
        torch.manual_seed(0)
        sae = make_training_sae("topk", d_in=16, d_sae=64, k=2)
        cfg = DictionaryTrainConfig(n_steps=300, batch_size=64, lr=3e-3, log_every=100, dead_window=20,
                                    resample_every=50, resample_until_fraction=0.7, resample_pool_batches=pool,
                                    resample_encoder_scale=1.0)
        train_dictionary(sae, TensorSource(acts, seed=1), cfg, progress=False)
        never_fire[pool] = int((metrics.feature_density(sae, acts) == 0).sum())
    assert never_fire[16] < 0.7 * never_fire[1], f"features that never fire, by pool size: {never_fire}"


def test_schedules_and_stages():
    cfg = DictionaryTrainConfig(n_steps=100, lr=1.0, lr_warmup_steps=10, lr_decay_fraction=0.5,
                                stages=(Stage("reconstruct", 30), Stage("align", 70, {"binding": 1.0})))
    assert cfg.total_steps == 100
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(20) == 1.0 and cfg.lr_at(99) < 0.05
    assert stage_at(10, cfg).name == "reconstruct" and stage_at(30, cfg).coefficients == {"binding": 1.0}
    assert coefficient_at(2.0, 4, warmup=10) == pytest.approx(1.0) and coefficient_at(2.0, 50, warmup=10) == 2.0


def test_mismatched_widths_are_named():
    sae = make_training_sae("standard", d_in=8, d_sae=16)
    with pytest.raises(ValueError, match="inputs have d_in=32 but the SAE reads d_in=8"):
        train_dictionary(sae, TensorSource(torch.randn(100, 32)), CFG, progress=False)
    with pytest.raises(ValueError, match=r"targets have d_out=5 but the SAE predicts d_out=8 \(W_dec is \(16, 8\)\)"):
        train_dictionary(sae, TensorSource(torch.randn(100, 8), targets=torch.randn(100, 5)), CFG, progress=False)
    transcoder = make_training_sae("transcoder", d_in=8, d_sae=16, d_out=12)
    with pytest.raises(ValueError, match="targets have d_out=8 but the SAE predicts d_out=12"):
        train_dictionary(transcoder, TensorSource(torch.randn(100, 8), targets=torch.randn(100, 8)), CFG,
                         progress=False)
    with pytest.raises(ValueError, match="a transcoder needs targets: pass TensorSource"):
        train_dictionary(transcoder, TensorSource(torch.randn(100, 8)), dataclasses.replace(CFG, batch_size=10),
                         progress=False)


def test_tensor_source_rejects_rows_that_do_not_line_up():
    with pytest.raises(ValueError, match=r"\[n_tokens, d_in\], got shape \(2, 3, 4\)"):
        TensorSource(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"targets have shape \(99, 4\), activations \(100, 8\)"):
        TensorSource(torch.randn(100, 8), targets=torch.randn(99, 4))
    with pytest.raises(ValueError, match=r"labels\['relation'\].*shape \(100, 2\), activations \(100, 8\)"):
        TensorSource(torch.randn(100, 8), labels={"relation": torch.zeros(100, 2, dtype=torch.long)})
    with pytest.raises(ValueError, match="must hold integers"):
        TensorSource(torch.randn(100, 8), labels={"relation": torch.zeros(100)})


def test_tensor_source_keeps_targets_and_labels_on_their_rows():
    acts = torch.randn(100, 8)
    rows = torch.arange(100)
    source = TensorSource(acts, targets=2 * acts[:, :4], labels={"row": rows, "parity": rows % 2}, seed=5)
    assert (source.d_in, source.d_out) == (8, 4)
    seen = []
    for step in range(12):  # past the first epoch (3 batches of 32 per epoch)
        batch = source.batch(step, 32)
        assert isinstance(batch, ActivationBatch)
        r = batch.labels["row"]
        assert torch.equal(batch.inputs, acts[r]) and torch.equal(batch.targets, 2 * acts[r, :4])
        assert torch.equal(batch.labels["parity"], r % 2)
        seen.append(r)
    assert len(torch.cat(seen[:3]).unique()) == 96 and not torch.equal(seen[0], seen[3])  # reshuffled each epoch
    assert TensorSource(acts).batch(0, 32).targets is None


class LabelRecordingSAE(StandardTrainingSAE):
    """A standard SAE whose step records the step input it was handed (labels and inputs)."""

    def __init__(self, cfg: StandardTrainingSAEConfig) -> None:
        super().__init__(cfg)
        self.seen: list[DictionaryStepInput] = []

    def training_forward_pass(self, step_input):
        self.seen.append(dataclasses.replace(step_input, sae_in=step_input.sae_in.detach().clone()))
        return super().training_forward_pass(step_input)


def test_labels_reach_the_sae_with_their_rows_in_batch_order():
    acts, _ = planted(n=1000)
    relation = torch.randint(0, 5, (1000,), generator=torch.Generator().manual_seed(0))
    labels = {"relation": relation, "row": torch.arange(1000)}
    sae = LabelRecordingSAE(StandardTrainingSAEConfig(d_in=32, d_sae=64, l1_coefficient=1.0))
    cfg = dataclasses.replace(CFG, n_steps=6, batch_size=200)
    result = train_dictionary(sae, TensorSource(acts, labels=labels, seed=2), cfg, progress=False)
    expected = TensorSource(acts, labels=labels, seed=2)
    assert len(sae.seen) == 6
    for step, step_input in enumerate(sae.seen):
        assert isinstance(step_input, DictionaryStepInput) and step_input.targets is None
        rows = expected.batch(step, 200).labels["row"]
        assert torch.equal(step_input.labels["row"], rows), f"step {step}: rows out of batch order"
        assert torch.equal(step_input.labels["relation"], relation[rows]), "labels are not scaled nor reordered"
        assert torch.allclose(step_input.sae_in, acts[rows] * result.activation_scale), "labels left their rows"


def test_training_stops_naming_the_step_of_a_non_finite_batch():
    acts, _ = planted(n=2000)
    source = TensorSource(acts, labels={"row": torch.arange(2000)}, seed=1)
    bad_step = 7
    acts[source.batch(bad_step, 100).labels["row"][13]] = float("nan")  # one row, first drawn at step 7
    sae = make_training_sae("standard", d_in=32, d_sae=64)
    cfg = dataclasses.replace(CFG, n_steps=20, batch_size=100, normalize_activations=False)
    with pytest.raises(ValueError, match=f"step {bad_step} has 32 non-finite inputs .* in 1 of its 100 rows"):
        train_dictionary(sae, source, cfg, progress=False)
    assert all(torch.isfinite(p).all() for p in sae.parameters()), "a NaN batch reached the weights"
    with pytest.raises(ValueError, match="non-finite inputs .* while estimating the activation scale"):
        train_dictionary(sae, source, dataclasses.replace(cfg, normalize_activations=True), progress=False)
    targets = torch.randn(2000, 32)
    targets[source.batch(3, 100).labels["row"][0], 5] = float("inf")
    with pytest.raises(ValueError, match="step 3 has 1 non-finite targets"):
        train_dictionary(sae, TensorSource(torch.randn(2000, 32), targets=targets, seed=1), cfg, progress=False)


class NaNLossSAE(StandardTrainingSAE):
    """A standard SAE whose loss becomes NaN at step 4."""

    def training_forward_pass(self, step_input):
        out = super().training_forward_pass(step_input)
        if step_input.n_training_steps == 4:
            out.loss = out.loss * float("nan")
        return out


def test_training_stops_naming_the_step_of_a_non_finite_loss():
    sae = NaNLossSAE(StandardTrainingSAEConfig(d_in=32, d_sae=64, l1_coefficient=1.0))
    with pytest.raises(FloatingPointError, match="the loss is nan at step 4 .* on a finite batch; try a lower lr"):
        train_dictionary(sae, TensorSource(planted(n=1000)[0]), dataclasses.replace(CFG, batch_size=100),
                         progress=False)
    assert all(torch.isfinite(p).all() for p in sae.parameters())


BAD_CONFIGS = [
    ({"n_steps": 0}, r"n_steps must be >= 1, got 0"),
    ({"batch_size": -4}, r"batch_size must be >= 1, got -4"),
    ({"lr": 0.0}, r"lr must be a finite number > 0, got 0.0"),
    ({"lr": -1e-3}, r"lr must be a finite number > 0, got -0.001"),
    ({"lr": float("nan")}, r"lr must be a finite number > 0, got nan"),
    ({"betas": (0.9, 1.0)}, r"betas must be two numbers in \[0, 1\), got \(0.9, 1.0\)"),
    ({"betas": (-0.1, 0.999)}, r"betas must be two numbers in \[0, 1\), got \(-0.1, 0.999\)"),
    ({"lr_warmup_steps": -1}, r"lr_warmup_steps must be >= 0, got -1"),
    ({"coefficient_warmup_steps": -5}, r"coefficient_warmup_steps must be >= 0 or None, got -5"),
    ({"lr_decay_fraction": 2}, r"lr_decay_fraction must be in \[0, 1\], got 2"),
    ({"lr_decay_fraction": -0.1}, r"lr_decay_fraction must be in \[0, 1\], got -0.1"),
    ({"grad_clip": 0.0}, r"grad_clip must be > 0, got 0.0"),
    ({"grad_clip": -1.0}, r"grad_clip must be > 0, got -1.0"),
    ({"dead_window": 0}, r"dead_window must be >= 1, got 0"),
    ({"resample_every": -10}, r"resample_every must be >= 0, got -10"),
    ({"resample_every": 5, "dead_window": 500}, r"resample_every=5 is too short for dead_window=500"),
    ({"resample_until_fraction": 1.5}, r"resample_until_fraction must be in \[0, 1\], got 1.5"),
    ({"resample_pool_batches": 0}, r"resample_pool_batches must be >= 1, got 0"),
    ({"resample_encoder_scale": 0.0}, r"resample_encoder_scale must be a finite number > 0, got 0.0"),
    ({"resample_encoder_scale": -0.2}, r"resample_encoder_scale must be a finite number > 0, got -0.2"),
    ({"log_every": 0}, r"log_every must be >= 1, got 0"),
    ({"checkpoint_every": 0}, r"checkpoint_every must be >= 1, got 0"),
    ({"seed": -1}, r"seed must be in \[0, 2\*\*31\)"),
    ({"stages": (Stage("warm", 0),)}, r"stage 'warm' n_steps must be >= 1, got 0"),
    ({"stages": (Stage("a", 5), Stage("b", 5), Stage("a", 5))}, r"stage names must be unique.*\['a'\] repeated"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_CONFIGS, ids=[str(f) for f, _ in BAD_CONFIGS])
def test_every_bad_config_field_is_rejected_with_its_value_and_range(fields, message):
    with pytest.raises(ValueError, match=message):
        DictionaryTrainConfig(**fields)


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
    assert (source.d_in, source.d_out) == (tiny_bridge.cfg.d_model, None)
    every = hooks.cache_activations(tiny_bridge, tokens, [hook], progress=False)[hook]
    for step in [0, 3, 7, 2]:  # out of order, across chunks and epochs
        b = source.batch(step, 16)
        assert torch.equal(b.inputs, again.batch(step, 16).inputs) and b.targets is None
        assert torch.cdist(b.inputs, every).min(dim=1).values.max() < 1e-3  # a real activation (rows differ by ~0.1)
    sae = make_training_sae("standard", d_in=tiny_bridge.cfg.d_model, d_sae=64)
    result = train_dictionary(sae, source, dataclasses.replace(CFG, n_steps=10, batch_size=16), progress=False)
    assert result.steps == 10
    with pytest.raises(ValueError, match="Closest valid names"):
        ModelActivationSource(tiny_bridge, tokens, "blocks.1.resid_pre")
    with pytest.raises(ValueError, match="Closest valid names"):
        ModelActivationSource(tiny_bridge, tokens, hook, target_hook_name="blocks.1.mlp_out")


def test_model_source_gives_a_transcoders_targets_from_the_same_forward_pass(tiny_bridge, smoke_world):
    from workbench import hooks
    from workbench.datasets.corpus import token_sequences
    from workbench.dictionaries.training import ModelActivationSource

    tokens = token_sequences(smoke_world, tiny_bridge.tokenizer, 12, seq_len=32)
    hook_in, hook_out = hooks.mlp_in(0), hooks.mlp_out(0)
    source = ModelActivationSource(tiny_bridge, tokens, hook_in, target_hook_name=hook_out, sequences_per_chunk=4)
    d_model = tiny_bridge.cfg.d_model
    assert (source.d_in, source.d_out) == (d_model, d_model)
    every = hooks.cache_activations(tiny_bridge, tokens, [hook_in, hook_out], progress=False)
    for step in [0, 5, 2]:
        b = source.batch(step, 16)
        rows = torch.cdist(b.inputs, every[hook_in]).argmin(dim=1)  # which cached token each row is
        assert torch.allclose(b.inputs, every[hook_in][rows], atol=1e-5)
        assert torch.allclose(b.targets, every[hook_out][rows], atol=1e-5), "targets are not their inputs' rows"
    sae = make_training_sae("transcoder", d_in=d_model, d_sae=64, d_out=d_model)
    result = train_dictionary(sae, source, dataclasses.replace(CFG, n_steps=10, batch_size=16), progress=False)
    assert result.steps == 10
