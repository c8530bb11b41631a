import math

import pytest
import torch
from sae_lens.evals import ExplainedVarianceCalculator
from torch import nn

from workbench import hooks
from workbench.dictionaries import baselines, make_training_sae, metrics


def test_metrics_agree_with_sae_lens_and_hand_values():
    torch.manual_seed(0)
    sae = make_training_sae("standard", d_in=8, d_sae=32)
    x = torch.randn(1000, 8) * 3 + 1
    m = metrics.dictionary_metrics(sae, x, batch_size=300)
    ref = ExplainedVarianceCalculator()
    x_hat = sae.decode(sae.encode(x)).detach()
    ref.add_batch(sae_output=x_hat, hidden_acts=x)
    assert abs(m.explained_variance - ref.compute()) < 1e-6
    assert abs(m.l0 - (sae.encode(x) > 0).float().sum(-1).mean().item()) < 1e-4
    gamma = x_hat.pow(2).sum(-1).mean() / (x_hat * x).sum(-1).mean()  # SAELens's relative_reconstruction_bias
    assert abs(m.shrinkage_gamma - gamma.item()) < 1e-4
    assert m.density.shape == (32,) and 0 <= m.dead_fraction <= 1
    assert torch.allclose(metrics.feature_density(sae, x, batch_size=300), m.density)


def test_a_feature_that_never_fires_has_zero_density():
    sae = make_training_sae("standard", d_in=4, d_sae=3)
    with torch.no_grad():
        sae.b_enc.copy_(torch.tensor([100.0, 0.0, -100.0]))  # always on, sometimes on, never on
    density = metrics.feature_density(sae, torch.randn(500, 4))
    assert density[0] == 1.0 and 0 < density[1] < 1 and density[2] == 0.0


def test_a_perfect_reconstruction_explains_everything_without_shrinkage():
    x = torch.randn(500, 6)
    m = metrics.dictionary_metrics(baselines.neuron_basis(x), x)
    assert abs(m.explained_variance - 1) < 1e-6 and abs(m.shrinkage_gamma - 1) < 1e-6 and m.l0 > 5.9


class _LinearTranscoder(nn.Module):
    """A transcoder-shaped dictionary (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_out]``, ``d_out != d_in``) with no
    nonlinearity, so its prediction is the exact matrix product ``x W_enc W_dec``."""

    def __init__(self, d_in: int = 6, d_sae: int = 4, d_out: int = 3) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.W_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=gen))
        self.W_dec = nn.Parameter(torch.randn(d_sae, d_out, generator=gen))

    def encode(self, x):
        return x @ self.W_enc

    def decode(self, codes):
        return codes @ self.W_dec


def test_encode_in_batches_yields_every_row_once_in_order():
    sae = make_training_sae("standard", d_in=8, d_sae=16)
    x = torch.randn(1000, 8, dtype=torch.float64)
    batches = list(metrics.encode_in_batches(sae, x, batch_size=300))
    assert [len(b) for b, _ in batches] == [300, 300, 300, 100] and batches[0][0].dtype == torch.float32
    assert torch.equal(torch.cat([b for b, _ in batches]), x.float())
    assert torch.allclose(torch.cat([c for _, c in batches]), sae.encode(x.float()))


def test_a_transcoder_is_measured_against_its_target_not_its_input():
    tc = _LinearTranscoder()
    x = torch.randn(500, 6)
    with torch.no_grad():
        prediction = tc.decode(tc.encode(x))
    exact = metrics.dictionary_metrics(tc, x, batch_size=128, targets=prediction)
    assert abs(exact.explained_variance - 1) < 1e-6 and abs(exact.shrinkage_gamma - 1) < 1e-5
    # against twice its prediction: gamma = ||p||^2 / (p . 2p) = 1/2, and EV = 1 - E||p||^2 / Var(2p)
    doubled = metrics.dictionary_metrics(tc, x, batch_size=128, targets=2 * prediction)
    variance = (2 * prediction).var(0, unbiased=False).sum()
    assert abs(doubled.shrinkage_gamma - 0.5) < 1e-5
    assert abs(doubled.explained_variance - (1 - prediction.pow(2).sum(-1).mean() / variance).item()) < 1e-5
    with pytest.raises(ValueError, match=r"W_dec.shape\[1\]=3.*W_enc.shape\[0\]=6.*targets"):
        metrics.dictionary_metrics(tc, x)  # nothing of width 3 to compare with
    with pytest.raises(ValueError, match=r"targets have shape \(500, 6\).*W_dec.shape\[1\]=3"):
        metrics.dictionary_metrics(tc, x, targets=x)


def test_activations_of_another_width_are_rejected_naming_both_widths():
    sae = make_training_sae("standard", d_in=8, d_sae=16)
    with pytest.raises(ValueError, match=r"width 6 .*W_enc.shape\[0\]=8"):
        metrics.dictionary_metrics(sae, torch.randn(10, 6))


def test_no_activations_raise_and_a_zero_reconstruction_has_nan_gamma():
    zero = baselines.LinearDictionary(torch.eye(4), torch.zeros(4, 4), torch.zeros(4), "zero")
    with pytest.raises(ValueError, match="no rows"):
        metrics.dictionary_metrics(zero, torch.zeros(0, 4))
    m = metrics.dictionary_metrics(zero, torch.randn(100, 4))  # x_hat = 0: E[x_hat . x] = 0
    assert math.isnan(m.shrinkage_gamma) and m.explained_variance < 0.1


def test_ce_loss_recovered_is_one_for_an_identity_and_zero_for_mean_ablation(tiny_bridge, smoke_world):
    from workbench.datasets.corpus import token_sequences

    tokens = token_sequences(smoke_world, tiny_bridge.tokenizer, 4, seq_len=24)
    hook = hooks.resid_pre(1)
    identity = baselines.neuron_basis(torch.zeros(1, tiny_bridge.cfg.d_model))
    r = metrics.ce_loss_recovered(tiny_bridge, identity, hook, tokens)
    assert abs(r["ce_loss_recovered_mean"] - 1) < 1e-4 and abs(r["ce_loss_spliced"] - r["ce_loss_clean"]) < 1e-5
    _, cache = tiny_bridge.run_with_cache(tokens, names_filter=[hook])
    mean = cache[hook][:, 1:].reshape(-1, tiny_bridge.cfg.d_model).mean(0)
    constant = baselines.LinearDictionary(torch.zeros(tiny_bridge.cfg.d_model, 1), torch.zeros(1, tiny_bridge.cfg.d_model),
                                          mean, "mean")
    r = metrics.ce_loss_recovered(tiny_bridge, constant, hook, tokens, mean_activation=mean)
    assert abs(r["ce_loss_recovered_mean"]) < 1e-4


def test_ce_loss_recovered_with_precomputed_reference_losses_matches_computing_them(tiny_bridge, smoke_world):
    from workbench.datasets.corpus import token_sequences

    tokens = token_sequences(smoke_world, tiny_bridge.tokenizer, 4, seq_len=24)
    hook = hooks.resid_pre(1)
    sae = baselines.pca(torch.randn(200, tiny_bridge.cfg.d_model), 4)  # a lossy dictionary: recovered strictly < 1
    reference = metrics.reference_losses(tiny_bridge, hook, tokens)
    direct = metrics.ce_loss_recovered(tiny_bridge, sae, hook, tokens)
    reused = metrics.ce_loss_recovered(tiny_bridge, sae, hook, tokens, reference=reference)
    assert direct.keys() == reused.keys()
    assert all(abs(direct[k] - reused[k]) < 1e-6 for k in direct)
    assert reference["ce_loss_zero_ablated"] > reference["ce_loss_clean"]
