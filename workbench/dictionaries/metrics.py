"""How good a dictionary is: sparsity, reconstruction, shrinkage, dead/dense features, and the CE loss
recovered when its reconstruction is spliced into the model.

Works for SAELens SAEs and for the baselines (anything with ``encode``/``decode``). Explained variance
uses SAELens's own streaming calculator, so the numbers agree with SAELens's evals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from sae_lens.evals import ExplainedVarianceCalculator
from torch import Tensor

from workbench import hooks, interventions

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
def encode_in_batches(dictionary: torch.nn.Module, acts: Float[Tensor, "n d_in"], batch_size: int = 8192
                      ) -> Iterator[tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch d_sae"]]]:
    """Yield ``(x, codes)`` for consecutive batches of ``acts``: ``x`` moved to the dictionary's device as
    float32 and its codes, so a large cache is encoded without holding all its codes (or its fp16 copy) at once."""
    device = dictionary.W_dec.device
    for i in range(0, len(acts), batch_size):
        x = acts[i:i + batch_size].to(device, torch.float32)
        yield x, dictionary.encode(x)


@torch.no_grad()
def feature_density(dictionary: torch.nn.Module, acts: Float[Tensor, "n d_in"], batch_size: int = 8192) -> Tensor:
    """``[d_sae]`` share of ``acts`` each feature fires on (encoding only: cheap enough for a whole training set,
    where a feature that never fires is dead by the usual definition)."""
    fired = torch.zeros(dictionary.W_dec.shape[0], device=dictionary.W_dec.device)
    for _, codes in encode_in_batches(dictionary, acts, batch_size):
        fired += (codes != 0).sum(0)
    return (fired / len(acts)).cpu()


@torch.no_grad()
def dictionary_metrics(dictionary: torch.nn.Module, acts: Float[Tensor, "n d_in"], batch_size: int = 8192,
                       targets: Float[Tensor, "n d_out"] | None = None) -> DictionaryMetrics:
    """Evaluate ``dictionary`` on ``acts`` in batches.

    Reconstruction (explained variance, shrinkage) compares ``decode(encode(x))`` with ``x``, or with
    ``targets`` when given: a transcoder reads one activation and predicts another (the MLP output), so it is
    measured against what it predicts. ``shrinkage_gamma`` is nan when the reconstruction is orthogonal to
    its target (a dictionary that outputs zeros), where the ratio has no meaning.
    """
    d_in, d_out = dictionary.W_enc.shape[0], dictionary.W_dec.shape[1]
    if len(acts) == 0:
        raise ValueError("acts has no rows; pass at least one activation to evaluate the dictionary on")
    if acts.shape[-1] != d_in:
        raise ValueError(f"acts have width {acts.shape[-1]} but the dictionary reads width W_enc.shape[0]={d_in}; "
                         "pass activations from the hook (and model) it was trained on")
    if targets is None and d_out != d_in:
        raise ValueError(f"the dictionary writes width W_dec.shape[1]={d_out}, not its input width W_enc.shape[0]="
                         f"{d_in} (a transcoder): pass the activations it predicts as targets [n, {d_out}]")
    if targets is not None and (targets.shape[-1] != d_out or len(targets) != len(acts)):
        raise ValueError(f"targets have shape {tuple(targets.shape)} but the dictionary writes width "
                         f"W_dec.shape[1]={d_out} for {len(acts)} rows of acts; pass targets [{len(acts)}, {d_out}]")
    ev = ExplainedVarianceCalculator()
    fired = torch.zeros(dictionary.W_dec.shape[0], device=dictionary.W_dec.device)
    l0_sum, hat_sq, hat_dot = 0.0, 0.0, 0.0
    for i, (x, codes) in enumerate(encode_in_batches(dictionary, acts, batch_size)):
        target = x if targets is None else targets[i * batch_size:(i + 1) * batch_size].to(x.device, torch.float32)
        x_hat = dictionary.decode(codes)
        active = codes != 0
        l0_sum += active.sum().item()
        fired += active.sum(0)
        hat_sq += x_hat.pow(2).sum().item()
        hat_dot += (x_hat * target).sum().item()
        ev.add_batch(sae_output=x_hat, hidden_acts=target)
    n = len(acts)
    density = (fired / n).cpu()
    gamma = hat_sq / hat_dot if hat_dot != 0 else float("nan")
    return DictionaryMetrics(l0=l0_sum / n, explained_variance=ev.compute(), shrinkage_gamma=gamma,
                             dead_fraction=(density == 0).float().mean().item(),
                             dense_fraction=(density > DENSE_THRESHOLD).float().mean().item(), density=density)


@torch.no_grad()
def _loss(model, tokens: Int[Tensor, "batch pos"]) -> float:
    logp = model(tokens)[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None]).mean().item()


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    """``(L_ablated - L_spliced) / (L_ablated - L_clean)``; nan when ablating costs nothing (no scale to measure by)."""
    return (ablated - spliced) / (ablated - clean) if ablated != clean else float("nan")


@torch.no_grad()
def ce_loss_recovered(model, dictionary: torch.nn.Module, hook_name: str, tokens: Int[Tensor, "batch pos"],
                      mean_activation: Float[Tensor, " d"] | None = None, hook_out: str | None = None,
                      reference: dict[str, float] | None = None) -> dict[str, float]:
    """Next-token loss with the dictionary's reconstruction in place of the activation (a splice without error
    term) at every non-BOS position, against the clean model and against zero- and mean-ablation there.

    ``hook_name`` is where the dictionary reads and, unless ``hook_out`` is given (a transcoder:
    ``blocks.{l}.mlp.hook_in`` -> ``blocks.{l}.hook_mlp_out``), where it writes. BOS positions are left alone:
    evaluation rows are packed documents with a BOS before each, whose activations no dictionary trained on.
    ``ce_loss_recovered_zero = (L_zero - L_spliced) / (L_zero - L_clean)``; likewise for the mean, which is
    taken over the non-BOS positions of ``tokens`` unless given. ``reference``: the clean and ablated losses of
    :func:`reference_losses` on the same tokens and write hook, so that measuring many dictionaries runs the model
    once each instead of four times.
    """
    write_hook = hook_out or hook_name
    hooks.check_hook_name(model, write_hook)
    tokens = tokens.to(next(model.parameters()).device)
    not_bos = tokens != model.tokenizer.bos_token_id
    if reference is None:
        reference = reference_losses(model, write_hook, tokens, mean_activation)
    splice = interventions.Splice(dictionary, hook_name, hook_out, use_error_term=False, positions=not_bos)
    with interventions.spliced(model, splice):
        spliced = _loss(model, tokens)
    clean, zero, mean = (reference[k] for k in ("ce_loss_clean", "ce_loss_zero_ablated", "ce_loss_mean_ablated"))
    return {**reference, "ce_loss_spliced": spliced, "ce_loss_recovered_zero": _recovered(zero, spliced, clean),
            "ce_loss_recovered_mean": _recovered(mean, spliced, clean)}


@torch.no_grad()
def reference_losses(model, hook_name: str, tokens: Int[Tensor, "batch pos"],
                     mean_activation: Float[Tensor, " d"] | None = None) -> dict[str, float]:
    """The losses :func:`ce_loss_recovered` measures a splice against: clean, and with ``hook_name`` zero- and
    mean-ablated at every non-BOS position (the mean over those positions of ``tokens`` unless given)."""
    hooks.check_hook_name(model, hook_name)
    tokens = tokens.to(next(model.parameters()).device)
    not_bos = tokens != model.tokenizer.bos_token_id
    if mean_activation is None:
        _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
        mean_activation = cache[hook_name][not_bos].float().mean(0)
    clean = _loss(model, tokens)
    with interventions.patched(model, hook_name, torch.zeros_like(mean_activation), positions=not_bos):
        zero = _loss(model, tokens)
    with interventions.patched(model, hook_name, mean_activation, positions=not_bos):
        mean = _loss(model, tokens)
    return {"ce_loss_clean": clean, "ce_loss_zero_ablated": zero, "ce_loss_mean_ablated": mean}
