"""Every registered architecture trains (loss and gradients finite on tiny shapes) and round-trips
through SAELens's on-disk format; the paper Gated SAE matches a hand computation."""

import json

import pytest
import torch
from sae_lens import SAE
from sae_lens.saes.sae import TrainStepInput

from workbench.dictionaries import load_dictionary, make_training_sae, save_dictionary
from workbench.dictionaries.training import DictionaryStepInput

TRAINABLE = ["standard", "standard_tied", "gated", "gated_paper", "topk", "topk_sparse", "batchtopk", "jumprelu",
             "standard_sparse", "standard_tied_sparse", "gated_sparse", "gated_paper_sparse"]
EXTRA = {"topk": {"k": 4}, "topk_sparse": {"k": 4}, "batchtopk": {"k": 4}}


def step_input(x, d_sae, targets=None):
    return DictionaryStepInput(sae_in=x, coefficients={"l1": 0.1, "l0": 0.1},
                               dead_neuron_mask=torch.zeros(d_sae, dtype=torch.bool), n_training_steps=0,
                               is_logging_step=False, targets=targets)


@pytest.mark.parametrize("arch", TRAINABLE)
def test_loss_and_gradients_are_finite(arch):
    torch.manual_seed(0)
    sae = make_training_sae(arch, d_in=16, d_sae=64, **EXTRA.get(arch, {}))
    x = torch.randn(32, 16)
    out = sae.training_forward_pass(step_input(x, 64))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.sae_out.shape == x.shape and out.feature_acts.shape == (32, 64)
    assert sae.W_dec.grad is not None and torch.isfinite(sae.W_dec.grad).all()


# BatchTopK is saved by SAELens as a JumpReLU SAE whose thresholds are estimated during training, so its
# inference output differs from the batch-level top-k by design.
@pytest.mark.parametrize("arch", [a for a in TRAINABLE if a != "batchtopk"])
def test_save_then_sae_lens_load_gives_identical_outputs(arch, tmp_path):
    torch.manual_seed(0)
    sae = make_training_sae(arch, d_in=16, d_sae=64, **EXTRA.get(arch, {}))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name != "threshold":  # JumpReLU thresholds must stay positive
                p.add_(0.05 * torch.randn_like(p))
    sae.eval()
    x = torch.randn(8, 16)
    expected = sae.decode(sae.encode(x))
    save_dictionary(sae, tmp_path / arch, hook_name="blocks.0.hook_resid_pre", model="test", metadata={"note": "test"})
    loaded = SAE.load_from_disk(str(tmp_path / arch))
    assert torch.allclose(loaded.decode(loaded.encode(x)), expected, atol=1e-5)
    assert json.loads((tmp_path / arch / "metadata.json").read_text())["training_architecture"] == arch


def test_paper_gated_loss_matches_a_hand_computation_and_freezes_the_decoder_in_the_aux_term():
    torch.manual_seed(0)
    sae = make_training_sae("gated_paper", d_in=2, d_sae=3, l1_coefficient=0.5)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0]]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
        sae.b_dec.copy_(torch.tensor([0.1, -0.1]))
        sae.b_gate.copy_(torch.tensor([0.0, -0.2, 0.1]))
        sae.b_mag.copy_(torch.tensor([0.1, 0.0, 0.0]))
        sae.r_mag.copy_(torch.tensor([0.0, 0.5, -0.5]))
    x = torch.tensor([[1.0, 2.0]])
    c = x - sae.b_dec
    pi_gate = c @ sae.W_enc + sae.b_gate
    mag = torch.relu(c @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
    f = (pi_gate > 0).float() * mag
    x_hat = f @ sae.W_dec + sae.b_dec
    aux_recon = torch.relu(pi_gate) @ sae.W_dec + sae.b_dec
    l1 = 0.1  # the coefficient step_input() passes
    expected = ((x - x_hat) ** 2).sum() + l1 * torch.relu(pi_gate).sum() + ((x - aux_recon) ** 2).sum()
    out = sae.training_forward_pass(step_input(x, 3))
    assert torch.allclose(out.loss, expected.detach(), atol=1e-6)

    # the auxiliary term alone sends no gradient to the decoder matrix, but does reach the gate (b_dec
    # still learns through the input centring x - b_dec, as in the paper)
    sae.zero_grad()
    out.losses["auxiliary_reconstruction_loss"].backward()
    assert sae.W_dec.grad is None or torch.all(sae.W_dec.grad == 0)
    assert sae.b_gate.grad.abs().sum() > 0

    # SAELens's own gated lets the same term train the decoder: the difference we provide
    ref = make_training_sae("gated", d_in=2, d_sae=3, l1_coefficient=0.5)
    ref.load_state_dict(sae.state_dict())
    ref.training_forward_pass(step_input(x, 3)).losses["auxiliary_reconstruction_loss"].backward()
    assert ref.W_dec.grad.abs().sum() > 0


def test_tied_sae_encodes_with_the_decoder_transpose():
    torch.manual_seed(0)
    sae = make_training_sae("standard_tied", d_in=4, d_sae=6)
    assert not sae.W_enc.requires_grad
    x = torch.randn(5, 4)
    expected = torch.relu((x - sae.b_dec) @ sae.W_dec.T + sae.b_enc)
    assert torch.allclose(sae.encode(x), expected, atol=1e-6)


def test_unknown_architecture_and_config_fields_are_named():
    with pytest.raises(ValueError, match="registered"):
        make_training_sae("sparse_magic", 4, 8)
    with pytest.raises(ValueError, match="l1_coeficient"):
        make_training_sae("standard", 4, 8, l1_coeficient=1.0)


def test_loading_a_wrong_file_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        load_dictionary(tmp_path)
    sae = make_training_sae("standard", d_in=4, d_sae=8)
    save_dictionary(sae, tmp_path / "a", hook_name="blocks.0.hook_resid_pre", model="test")
    with pytest.raises(ValueError, match="d_in=4"):
        load_dictionary(tmp_path / "a", expected_d_in=16)
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    (tmp_path / "a" / "cfg.json").write_text(json.dumps(cfg | {"d_sae": 9}))
    with pytest.raises(ValueError, match="do not match"):
        load_dictionary(tmp_path / "a")


def test_transcoder_learns_a_linear_map_from_raw_activations_and_saves_as_a_sae_lens_transcoder(tmp_path):
    """Inputs far from unit scale, targets at yet another scale: training rescales both by one factor and folds
    it into the weights, so the returned transcoder reads raw inputs and predicts raw targets."""
    from sae_lens.saes.transcoder import Transcoder

    from workbench.dictionaries.training import DictionaryTrainConfig, TensorSource, train_dictionary

    g = torch.Generator().manual_seed(0)
    x_in = 30 * torch.relu(torch.randn(20_000, 8, generator=g))
    x_out = x_in @ (5 * torch.randn(8, 12, generator=g))
    sae = make_training_sae("transcoder", d_in=8, d_sae=64, d_out=12, l1_coefficient=0.01)
    cfg = DictionaryTrainConfig(n_steps=600, batch_size=512, lr=3e-3, log_every=100)
    result = train_dictionary(sae, TensorSource(x_in, targets=x_out), cfg, progress=False)
    assert result.activation_scale < 0.1  # the factor really was folded, not ~1
    assert result.history[-1]["explained_variance"] > 0.9  # of the batch's targets, as the step output's sae_in
    pred = sae.decode(sae.encode(x_in[:1000]))
    ev = 1 - (pred - x_out[:1000]).pow(2).sum() / (x_out[:1000] - x_out[:1000].mean(0)).pow(2).sum()
    assert ev > 0.9, f"explained variance {ev:.3f} of raw targets from raw inputs: is the scale folded both ways?"
    save_dictionary(sae, tmp_path / "tc", hook_name="blocks.0.mlp.hook_in", hook_name_out="blocks.0.hook_mlp_out",
                    model="test")
    loaded = SAE.load_from_disk(str(tmp_path / "tc"))
    assert isinstance(loaded, Transcoder) and loaded.cfg.d_out == 12
    assert torch.allclose(loaded.decode(loaded.encode(x_in[:1000])), pred, rtol=1e-4, atol=1e-3)


def test_transcoder_fold_turns_a_scaled_map_into_the_raw_one():
    torch.manual_seed(0)
    sae = make_training_sae("transcoder", d_in=8, d_sae=32, d_out=12)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, s = torch.randn(16, 8), 0.37
    scaled_prediction = sae.decode(sae.encode(s * x))  # trained on s * x_in, it predicts s * x_out
    sae.fold_activation_norm_scaling_factor(s)
    assert torch.allclose(sae.decode(sae.encode(x)), scaled_prediction / s, atol=1e-5)


def test_transcoder_step_reads_targets_and_says_when_they_are_missing():
    torch.manual_seed(0)
    sae = make_training_sae("transcoder", d_in=8, d_sae=32, d_out=12)
    x, y = torch.randn(16, 8), torch.randn(16, 12)
    out = sae.training_forward_pass(step_input(x, 32, targets=y))
    assert torch.equal(out.sae_in, y) and out.sae_out.shape == (16, 12)  # sae_in is the target, for batch metrics
    assert torch.allclose(out.losses["mse_loss"], (out.sae_out - y).pow(2).sum(-1).mean())
    with pytest.raises(ValueError, match=r"a transcoder needs targets: pass TensorSource\(acts_in, targets=acts_out\)"):
        sae.training_forward_pass(step_input(x, 32))
    with pytest.raises(ValueError, match="a transcoder needs targets"):  # SAELens's own step input has no targets
        sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={"l1": 0.1}, dead_neuron_mask=None,
                                                 n_training_steps=0, is_logging_step=False))
    with pytest.raises(ValueError, match=r"needs targets of shape \(16, 12\) .* got \(16, 8\)"):
        sae.training_forward_pass(step_input(x, 32, targets=x))


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("n_dead", [0, 5, 40])
def test_sparse_topk_step_equals_sae_lens_topk(rescale, n_dead):
    """Same weights and batch: the sparse step's outputs, losses and every gradient equal SAELens's dense topk
    (including the AuxK loss, whose k_aux = d_in // 2 = 8 is below and above the number of dead features)."""
    torch.manual_seed(0)
    dense = make_training_sae("topk", d_in=16, d_sae=64, k=4, rescale_acts_by_decoder_norm=rescale)
    sparse = make_training_sae("topk_sparse", d_in=16, d_sae=64, k=4, rescale_acts_by_decoder_norm=rescale)
    with torch.no_grad():
        for p in dense.parameters():
            p.add_(0.1 * torch.randn_like(p))
        sparse.load_state_dict(dense.state_dict())
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64)[:n_dead]] = True
    outs = []
    for sae in (dense, sparse):
        inp = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0,
                             is_logging_step=False)
        out = sae.training_forward_pass(inp)
        out.loss.backward()
        outs.append(out)
    assert torch.allclose(outs[0].sae_out, outs[1].sae_out, atol=1e-5)
    assert torch.allclose(outs[0].feature_acts, outs[1].feature_acts.to_dense(), atol=1e-5)
    for key in ("mse_loss", "auxiliary_reconstruction_loss"):
        assert torch.allclose(outs[0].losses[key], outs[1].losses[key], atol=1e-5), key
    for (name, p_dense), p_sparse in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        assert torch.allclose(p_dense.grad, p_sparse.grad, atol=1e-5), name
