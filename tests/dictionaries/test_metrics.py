import torch
from sae_lens.evals import ExplainedVarianceCalculator

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
