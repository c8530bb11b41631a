import torch

from workbench.dictionaries import baselines


def low_rank(n=2000, d=16, r=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, r, generator=g) @ torch.randn(r, d, generator=g) + 5.0


def test_pca_with_the_true_rank_reconstructs_exactly_and_random_directions_are_orthonormal():
    x = low_rank()
    p = baselines.pca(x, 4)
    assert torch.allclose(p(x), x, atol=1e-3)
    r = baselines.random_directions(x, 8)
    assert torch.allclose(r.W_enc.T @ r.W_enc, torch.eye(8), atol=1e-5)


def test_ica_recovers_independent_sparse_sources():
    g = torch.Generator().manual_seed(0)
    sources = torch.distributions.Laplace(0.0, 1.0).sample((5000, 3))
    mixing = torch.randn(3, 3, generator=g)
    x = sources @ mixing
    ica = baselines.ica(x, 3)
    codes = ica.encode(x)
    corr = torch.corrcoef(torch.cat([codes.T, sources.T]))[:3, 3:].abs()
    assert (corr.max(dim=1).values > 0.95).all()
    assert torch.allclose(ica(x), x, atol=1e-2)


def test_neuron_basis_reads_each_dimension_centred_and_reconstructs_exactly():
    x = torch.randn(10, 5) + 3.0
    n = baselines.neuron_basis(x)
    assert torch.allclose(n.encode(x), x - x.mean(0)) and torch.allclose(n(x), x)
    assert torch.allclose(n.encode(x).mean(0), torch.zeros(5), atol=1e-6)
