"""How good a dictionary is: sparsity, reconstruction, shrinkage, dead/dense features, and the CE loss
recovered when its reconstruction is spliced into the model.

Works for SAELens SAEs and for the baselines (anything with ``encode``/``decode``). Explained variance
uses SAELens's own streaming calculator, so the numbers agree with SAELens's evals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from sae_lens.evals import ExplainedVarianceCalculator
from torch import Tensor

from workbench import hooks

DENSE_THRESHOLD = 0.1
"""A feature firing on more than this fraction of tokens counts as dense."""


@dataclass
class DictionaryMetrics:
    """Reconstruction and sparsity of a dictionary on a set of activations."""

    l0: float
    """Mean number of non-zero codes per token."""
    explained_variance: float
    """1 - E||x - x_hat||^2 / Var(x) (total variance over dimensions); FVU is 1 minus this."""
    shrinkage_gamma: float
    """E[||x_hat||^2] / E[x_hat . x]: 1 means no shrinkage, below 1 shrunk (Rajamanoharan et al. eq. 10)."""
    dead_fraction: float
    """Share of features that never fire on these activations."""
    dense_fraction: float
    """Share of features firing on more than ``DENSE_THRESHOLD`` of tokens."""
    density: Tensor
    """Per-feature firing frequency ``[d_sae]``."""

    @property
    def fvu(self) -> float:
        return 1 - self.explained_variance

    def summary(self) -> dict[str, float]:
        return {"l0": self.l0, "explained_variance": self.explained_variance, "fvu": self.fvu,
                "shrinkage_gamma": self.shrinkage_gamma, "dead_fraction": self.dead_fraction,
                "dense_fraction": self.dense_fraction}


@torch.no_grad()
def feature_density(dictionary: torch.nn.Module, acts: Float[Tensor, "n d_in"], batch_size: int = 8192) -> Tensor:
    """``[d_sae]`` share of ``acts`` each feature fires on (encoding only: cheap enough for a whole training set,
    where a feature that never fires is dead by the usual definition)."""
    fired = torch.zeros(dictionary.W_dec.shape[0], device=dictionary.W_dec.device)
    for i in range(0, len(acts), batch_size):
        fired += (dictionary.encode(acts[i:i + batch_size].to(dictionary.W_dec.device, torch.float32)) != 0).sum(0)
    return (fired / len(acts)).cpu()


@torch.no_grad()
def dictionary_metrics(dictionary: torch.nn.Module, acts: Float[Tensor, "n d_in"],
                       batch_size: int = 8192) -> DictionaryMetrics:
    """Evaluate ``dictionary`` on ``acts`` in batches."""
    device = dictionary.W_dec.device
    ev = ExplainedVarianceCalculator()
    fired = torch.zeros(dictionary.W_dec.shape[0], device=device)
    l0_sum, hat_sq, hat_dot = 0.0, 0.0, 0.0
    for i in range(0, len(acts), batch_size):
        x = acts[i:i + batch_size].to(device, torch.float32)
        codes = dictionary.encode(x)
        x_hat = dictionary.decode(codes)
        active = codes != 0
        l0_sum += active.sum().item()
        fired += active.sum(0)
        hat_sq += x_hat.pow(2).sum().item()
        hat_dot += (x_hat * x).sum().item()
        ev.add_batch(sae_output=x_hat, hidden_acts=x)
    n = len(acts)
    density = (fired / n).cpu()
    return DictionaryMetrics(l0=l0_sum / n, explained_variance=ev.compute(), shrinkage_gamma=hat_sq / hat_dot,
                             dead_fraction=(density == 0).float().mean().item(),
                             dense_fraction=(density > DENSE_THRESHOLD).float().mean().item(), density=density)


@torch.no_grad()
def _loss(model, tokens: Tensor, fwd_hooks: list) -> float:
    with hooks.hooked(model, fwd_hooks):
        logits = model(tokens)
    logp = logits[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None]).mean().item()


@torch.no_grad()
def ce_loss_recovered(model, dictionary: torch.nn.Module, hook_name: str, tokens: Int[Tensor, "batch pos"],
                      mean_activation: Float[Tensor, " d"] | None = None) -> dict[str, float]:
    """Next-token loss with the dictionary's reconstruction spliced in at ``hook_name`` (every position but
    the first, BOS), against the clean model and against zero- and mean-ablation there.

    ``ce_loss_recovered_zero = (L_zero - L_spliced) / (L_zero - L_clean)``; likewise for the mean.
    """
    hooks.check_hook_name(model, hook_name)
    tokens = tokens.to(next(model.parameters()).device)

    def splice(act, hook):
        out = act.clone()
        out[:, 1:] = dictionary.decode(dictionary.encode(act[:, 1:].float())).to(act.dtype)
        return out

    def ablate(value):
        def fn(act, hook):
            out = act.clone()
            out[:, 1:] = value.to(act.dtype)
            return out
        return fn

    if mean_activation is None:
        _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
        mean_activation = cache[hook_name][:, 1:].reshape(-1, cache[hook_name].shape[-1]).float().mean(0)
    clean = _loss(model, tokens, [])
    spliced = _loss(model, tokens, [(hook_name, splice)])
    zero = _loss(model, tokens, [(hook_name, ablate(torch.zeros_like(mean_activation)))])
    mean = _loss(model, tokens, [(hook_name, ablate(mean_activation))])
    return {"ce_loss_clean": clean, "ce_loss_spliced": spliced, "ce_loss_zero_ablated": zero,
            "ce_loss_mean_ablated": mean,
            "ce_loss_recovered_zero": (zero - spliced) / (zero - clean),
            "ce_loss_recovered_mean": (mean - spliced) / (mean - clean)}
