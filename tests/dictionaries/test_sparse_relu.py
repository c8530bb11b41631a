"""The sparse ReLU-family steps equal their dense classes: outputs, every loss term and every gradient (sparse
codes, dense codes through the switch, and dense codes forced through the sparse maths), five steps of our
training loop, and a save that SAELens loads as the plain architecture."""

import pytest
import torch
from sae_lens import SAE
from sae_lens.saes.gated_sae import GatedSAE
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardSAE

from workbench.dictionaries import make_training_sae, save_dictionary
from workbench.dictionaries.sparse_relu import SPARSE_STEP_BELOW
from workbench.dictionaries.training import (
    DictionaryTrainConfig,
    TensorSource,
    batch_metrics,
    fired_features,
    train_dictionary,
)

DENSE = {"standard_sparse": "standard", "standard_tied_sparse": "standard_tied", "gated_sparse": "gated",
         "gated_paper_sparse": "gated_paper"}
PLAIN = {"standard_sparse": (StandardSAE, "standard"), "standard_tied_sparse": (StandardSAE, "standard"),
         "gated_sparse": (GatedSAE, "gated"), "gated_paper_sparse": (GatedSAE, "gated")}
D_IN, D_SAE = 16, 64
SPARSE, DENSE_CODES = 0.05, 0.5  # fractions of the rows each feature opens on


def twins(arch: str, x: torch.Tensor, open_fraction: float, unit_decoder: bool = False,
          sparse_step_below: float | None = None, **cfg):
    """The dense class and ``arch`` with identical, perturbed weights (decoder rows of unequal norms, so the
    L1 penalty's decoder-norm gradient matters, unless ``unit_decoder``, as the training loop keeps them) and
    gate biases at which each feature opens on ``open_fraction`` of the rows of ``x``; ``sparse_step_below``
    (for ``arch``) defaults to the architecture's own."""
    torch.manual_seed(0)
    dense = make_training_sae(DENSE[arch], D_IN, D_SAE, **cfg)
    with torch.no_grad():
        for p in dense.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if unit_decoder:
            dense.W_dec.div_(dense.W_dec.norm(dim=-1, keepdim=True))
        W_enc = dense.W_dec.T if arch == "standard_tied_sparse" else dense.W_enc
        gate_bias(dense).copy_(-((x - dense.b_dec) @ W_enc).quantile(1 - open_fraction, dim=0))
    switch = {} if sparse_step_below is None else {"sparse_step_below": sparse_step_below}
    sparse = make_training_sae(arch, D_IN, D_SAE, **switch, **cfg)
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def gate_bias(sae) -> torch.Tensor:
    return sae.b_gate if hasattr(sae, "b_gate") else sae.b_enc


def step(sae, x, l1=0.3):
    sae.zero_grad()
    out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={"l1": l1}, dead_neuron_mask=None,
                                                   n_training_steps=0, is_logging_step=False))
    out.loss.backward()
    return out


def assert_same_step(dense, sparse, x, expect_sparse: bool):
    ref, out = step(dense, x), step(sparse, x)
    assert out.feature_acts.is_sparse == expect_sparse, "the step took the other path"
    acts = out.feature_acts.to_dense() if out.feature_acts.is_sparse else out.feature_acts
    torch.testing.assert_close(acts, ref.feature_acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.sae_out, ref.sae_out, atol=1e-5, rtol=1e-5)
    assert out.losses.keys() == ref.losses.keys()
    for key in ref.losses:
        torch.testing.assert_close(out.losses[key], ref.losses[key], atol=1e-5, rtol=1e-5, msg=key)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
    for (name, p_ref), p in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        if p_ref.grad is None:  # the tied SAE's frozen W_enc
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-5, rtol=1e-5, msg=name)
    return ref, out


@pytest.mark.parametrize("arch", DENSE)
def test_sparse_step_equals_the_dense_class_on_sparse_codes(arch):
    x = torch.randn(64, D_IN)
    dense, sparse = twins(arch, x, SPARSE)
    _, out = assert_same_step(dense, sparse, x, expect_sparse=True)
    fraction = (out.feature_acts._values() != 0).sum().item() / (len(x) * D_SAE)
    assert 0.01 < fraction < SPARSE_STEP_BELOW, f"the test's codes are not sparse but not empty: {fraction:.3f}"


@pytest.mark.parametrize("arch", DENSE)
def test_dense_codes_take_the_dense_classs_own_step(arch):
    x = torch.randn(64, D_IN)
    dense, sparse = twins(arch, x, DENSE_CODES)
    assert_same_step(dense, sparse, x, expect_sparse=False)


@pytest.mark.parametrize("arch", DENSE)
def test_sparse_maths_holds_at_any_density_and_with_no_active_code(arch):
    x = torch.randn(64, D_IN)
    dense, sparse = twins(arch, x, DENSE_CODES, sparse_step_below=1.0)
    assert_same_step(dense, sparse, x, expect_sparse=True)
    dense, sparse = twins(arch, x, SPARSE)
    with torch.no_grad():
        for sae in (dense, sparse):
            gate_bias(sae).sub_(100.0)
    _, out = assert_same_step(dense, sparse, x, expect_sparse=True)
    assert out.feature_acts._nnz() == 0


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_standard_sparse_follows_lp_norm_and_apply_b_dec_to_input(apply_b_dec_to_input):
    x = torch.randn(64, D_IN)
    dense, sparse = twins("standard_sparse", x, SPARSE, lp_norm=2.0, apply_b_dec_to_input=apply_b_dec_to_input)
    assert_same_step(dense, sparse, x, expect_sparse=True)


@pytest.mark.parametrize("arch", DENSE)
def test_loop_statistics_read_the_sparse_codes_as_the_dense_ones(arch):
    x = torch.randn(64, D_IN)
    dense, sparse = twins(arch, x, SPARSE)
    ref, out = step(dense, x), step(sparse, x)
    assert torch.equal(fired_features(out.feature_acts), fired_features(ref.feature_acts))
    for key, value in batch_metrics(ref).items():
        assert batch_metrics(out)[key] == pytest.approx(value, abs=1e-5), key


@pytest.mark.parametrize("arch", DENSE)
def test_under_bf16_autocast_the_sparse_step_stays_close_to_fp32(arch):
    x = torch.randn(64, D_IN)
    dense, sparse = twins(arch, x, SPARSE)
    ref = step(dense, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse.training_forward_pass(TrainStepInput(sae_in=x, coefficients={"l1": 0.3}, dead_neuron_mask=None,
                                                          n_training_steps=0, is_logging_step=False))
    out.loss.backward()
    assert out.feature_acts.is_sparse and out.sae_out.dtype == torch.float32
    torch.testing.assert_close(out.loss, ref.loss, rtol=2e-2, atol=1e-2)
    for (name, p_ref), p in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        if p_ref.grad is not None:
            assert p.grad.dtype == torch.float32, name
            cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), p_ref.grad.flatten(), dim=0)
            assert cos > 0.99, f"{name}: cosine {cos:.4f} between bf16 and fp32 gradients"


@pytest.mark.parametrize("arch", DENSE)
def test_five_steps_of_the_loop_match_the_dense_class_and_save_as_the_plain_architecture(arch, tmp_path):
    acts = torch.randn(640, D_IN) * 3.0  # off unit scale: the loop's rescaling is folded in at the end
    dense, sparse = twins(arch, acts / 3.0, SPARSE, unit_decoder=True, sparse_step_below=1.0, l1_coefficient=0.3)
    cfg = DictionaryTrainConfig(n_steps=5, batch_size=64, lr=1e-3, decoder_unit_norm=True, log_every=1)
    runs = [train_dictionary(sae, TensorSource(acts), cfg, progress=False) for sae in (dense, sparse)]
    for (name, p_ref), p in zip(dense.state_dict().items(), sparse.state_dict().values(), strict=True):
        torch.testing.assert_close(p, p_ref, atol=1e-4, rtol=1e-4, msg=name)
    for point_ref, point in zip(*(run.history for run in runs), strict=True):
        assert point == pytest.approx(point_ref, rel=1e-4, abs=1e-5)
    assert 0 < runs[1].history[-1]["l0"] < SPARSE_STEP_BELOW * D_SAE  # the codes stayed sparse

    save_dictionary(sparse, tmp_path / arch, hook_name="blocks.0.hook_resid_pre", model="test")
    loaded = SAE.load_from_disk(str(tmp_path / arch))
    plain_class, plain_name = PLAIN[arch]
    assert type(loaded) is plain_class and loaded.cfg.architecture() == plain_name
    x = acts[:32]
    torch.testing.assert_close(loaded.encode(x), sparse.encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), sparse.decode(sparse.encode(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("fields", "message"), [
    ({"sparse_step_below": 1.5}, r"sparse_step_below must be in \[0, 1\], got 1.5"),
    ({"normalize_activations": "layer_norm"}, "normalize_activations='layer_norm'"),
])
def test_bad_configs_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        make_training_sae("standard_sparse", D_IN, D_SAE, **fields)

