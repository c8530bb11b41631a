"""Baselines with the dictionary interface (``encode``, ``decode``, ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``):
PCA and FastICA (scikit-learn), random directions, and the neuron (standard) basis — the comparisons of
Cunningham et al. (2023). Codes may be negative, so ``L0`` of a k-component baseline is k.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn


class LinearDictionary(nn.Module):
    """``encode(x) = (x - b_dec) @ W_enc + b_enc``, ``decode(c) = c @ W_dec + b_dec``; fixed, not trained."""

    def __init__(self, W_enc: Tensor, W_dec: Tensor, b_dec: Tensor, name: str) -> None:
        super().__init__()
        if W_enc.shape != W_dec.T.shape:
            raise ValueError(f"W_enc {tuple(W_enc.shape)} must be the transpose shape of W_dec {tuple(W_dec.shape)}")
        self.W_enc = nn.Parameter(W_enc.float(), requires_grad=False)
        self.W_dec = nn.Parameter(W_dec.float(), requires_grad=False)
        self.b_dec = nn.Parameter(b_dec.float(), requires_grad=False)
        self.b_enc = nn.Parameter(torch.zeros(W_enc.shape[1]), requires_grad=False)
        self.name = name

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def decode(self, codes: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        return self.decode(self.encode(x))


def _numpy(acts: Tensor, max_rows: int, seed: int) -> np.ndarray:
    if len(acts) > max_rows:
        idx = torch.randperm(len(acts), generator=torch.Generator().manual_seed(seed))[:max_rows]
        acts = acts[idx]
    return acts.float().cpu().numpy()


def pca(acts: Float[Tensor, "n d_in"], n_components: int, max_rows: int = 200_000, seed: int = 0) -> LinearDictionary:
    """The top ``n_components`` principal directions (orthonormal: the encoder is the decoder's transpose)."""
    from sklearn.decomposition import PCA

    fit = PCA(n_components=n_components, random_state=seed).fit(_numpy(acts, max_rows, seed))
    comps = torch.from_numpy(fit.components_)
    return LinearDictionary(comps.T, comps, torch.from_numpy(fit.mean_), f"PCA-{n_components}")


def ica(acts: Float[Tensor, "n d_in"], n_components: int, max_rows: int = 50_000, seed: int = 0,
        max_iter: int = 400) -> LinearDictionary:
    """FastICA with ``n_components`` sources: unmixing as encoder, mixing as decoder. ``max_iter`` bounds the
    fixed-point iterations (on few rows FastICA may not converge and would otherwise run all of them)."""
    from sklearn.decomposition import FastICA

    fit = FastICA(n_components=n_components, random_state=seed, max_iter=max_iter, whiten="unit-variance",
                  tol=1e-3).fit(_numpy(acts, max_rows, seed))
    return LinearDictionary(torch.from_numpy(fit.components_).T, torch.from_numpy(fit.mixing_).T,
                            torch.from_numpy(fit.mean_), f"ICA-{n_components}")


def random_directions(acts: Float[Tensor, "n d_in"], n_components: int, seed: int = 0) -> LinearDictionary:
    """``n_components`` random orthonormal directions (through the mean of ``acts``)."""
    d = acts.shape[1]
    if n_components > d:
        raise ValueError(f"at most d_in={d} orthonormal directions, asked for {n_components}")
    q, _ = torch.linalg.qr(torch.randn(d, n_components, generator=torch.Generator().manual_seed(seed)))
    return LinearDictionary(q, q.T, acts.float().mean(0), f"random-{n_components}")


def neuron_basis(acts: Float[Tensor, "n d_in"]) -> LinearDictionary:
    """The standard basis, centred: each neuron (or residual dimension) minus its mean is a feature (as PCA's and
    ICA's directions read centred activations, so all the signed baselines are alike)."""
    d = acts.shape[1]
    return LinearDictionary(torch.eye(d), torch.eye(d), acts.float().mean(0), "neurons")
