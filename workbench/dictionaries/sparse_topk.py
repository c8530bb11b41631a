"""SAELens's TopK SAE with a training step that touches only each token's k active features.

A dense TopK step costs six ``batch x d_in x d_sae`` matmuls, although only k of the d_sae codes of a token
are non-zero. Here only the encoder's forward matmul is dense (every pre-activation is needed to pick the
top k); the decoder reads the k active rows of ``W_dec`` (``embedding_bag``), and the backward pass
scatters into the k active columns of ``W_enc`` and rows of ``W_dec`` through sparse matmuls. The maths is
SAELens's ``topk`` (ReLU on the top k pre-activations, decoder-norm rescaling, the AuxK loss on dead
features); the outputs and gradients agree with it (tested), and it saves as SAELens's plain ``topk``.
Registered as ``topk_sparse``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from sae_lens.registry import register_sae_training_class
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from torch import Tensor
from typing_extensions import override


def _sparse_codes(idx: Int[Tensor, "batch k"], values: Float[Tensor, "batch k"], d_sae: int) -> Tensor:
    """The sparse ``[batch, d_sae]`` matrix with ``values[b, j]`` at ``(b, idx[b, j])`` (``.t()`` is free)."""
    batch, k = idx.shape
    rows = torch.arange(batch, device=idx.device).repeat_interleave(k)
    return torch.sparse_coo_tensor(torch.stack([rows, idx.reshape(-1)]), values.reshape(-1), (batch, d_sae),
                                   check_invariants=False)


class _TopKEncode(torch.autograd.Function):
    """``topk((x - b_dec) @ W_enc + b_enc) * scale`` returning (values, indices), with a sparse backward."""

    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, scale: Tensor, k: int):
        sae_in = x - b_dec
        # the scale folded into the weights: a [d_in, d_sae] product instead of a [batch, d_sae] one. In fp32
        # even under autocast: the sparse backward (index_add, sparse.mm) needs one dtype throughout.
        with torch.autocast(x.device.type, enabled=False):
            scaled = torch.addmm(b_enc * scale, sae_in, W_enc * scale)
        vals, idx = scaled.topk(k, dim=-1, sorted=False)
        pre_at_idx = vals / scale[idx]  # the unscaled pre-activations, for the gradient of the scale
        ctx.save_for_backward(sae_in, W_enc, scale, idx, pre_at_idx)
        ctx.mark_non_differentiable(idx)
        return vals, idx

    @staticmethod
    def backward(ctx, grad_vals: Tensor, _grad_idx: Tensor):
        sae_in, W_enc, scale, idx, pre_at_idx = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        grad_pre = grad_vals * scale[idx]
        flat_idx = idx.reshape(-1)
        grad_b_enc = torch.zeros(d_sae, dtype=grad_vals.dtype, device=grad_vals.device).index_add_(
            0, flat_idx, grad_pre.reshape(-1))
        grad_scale = torch.zeros_like(grad_b_enc).index_add_(0, flat_idx, (grad_vals * pre_at_idx).reshape(-1))
        grad_x = grad_b_dec = grad_W_enc = None
        G = _sparse_codes(idx, grad_pre, d_sae)  # [batch, d_sae]
        if ctx.needs_input_grad[2]:
            grad_W_enc = torch.sparse.mm(G.t(), sae_in).T
        if ctx.needs_input_grad[1]:  # only the batch sum of d loss / d sae_in is needed: no [batch, d_in] matmul
            grad_b_dec = -(W_enc @ grad_b_enc)
        if ctx.needs_input_grad[0]:
            grad_x = torch.sparse.mm(G, W_enc.T)
        return grad_x, grad_b_dec, grad_W_enc, grad_b_enc, grad_scale, None


class _TopKDecode(torch.autograd.Function):
    """``sum_j acts[b, j] * W_dec[idx[b, j]]``: the decoder on the k active rows, with a sparse backward."""

    @staticmethod
    def forward(ctx, acts: Tensor, idx: Tensor, W_dec: Tensor):
        ctx.save_for_backward(acts, idx, W_dec)
        with torch.autocast(acts.device.type, enabled=False):
            return F.embedding_bag(idx, W_dec, per_sample_weights=acts, mode="sum")

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        acts, idx, W_dec = ctx.saved_tensors
        grad_acts = grad_W_dec = None
        if ctx.needs_input_grad[0]:
            grad_acts = torch.bmm(W_dec[idx], grad_out.unsqueeze(-1)).squeeze(-1)
        if ctx.needs_input_grad[2]:
            grad_W_dec = torch.sparse.mm(_sparse_codes(idx, acts, W_dec.shape[0]).t(), grad_out)
        return grad_acts, None, grad_W_dec


@dataclass
class SparseTopKTrainingSAEConfig(TopKTrainingSAEConfig):
    """``TopKTrainingSAEConfig`` whose architecture name is ``topk_sparse`` (inference config: ``topk``)."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return "topk_sparse"

    @override
    def get_inference_config_class(self) -> type[TopKSAEConfig]:
        return TopKSAEConfig


class SparseTopKTrainingSAE(TopKTrainingSAE):
    """TopK SAE whose training forward and backward cost one dense matmul instead of six.

    ``feature_acts`` in the step output is a sparse COO tensor (as SAELens's ``use_sparse_activations``
    gives); ``hidden_pre`` holds only the ``[batch, k]`` active values (the dense one is never kept).
    """

    def _active(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(ReLU'd top-k values, their feature indices, decoder norms or ones)."""
        if self.cfg.normalize_activations not in ("none", None):
            raise ValueError("topk_sparse trains on activations normalised outside the SAE "
                             f"(normalize_activations='none'), got {self.cfg.normalize_activations!r}")
        norms = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else torch.ones_like(self.b_enc)
        b_dec = self.b_dec * self.cfg.apply_b_dec_to_input
        vals, idx = _TopKEncode.apply(x.to(self.dtype), b_dec, self.W_enc, self.b_enc, norms, self.cfg.k)
        return vals.relu(), idx, norms

    def _decode_active(self, acts: Tensor, idx: Tensor, norms: Tensor) -> Tensor:
        if self.cfg.rescale_acts_by_decoder_norm:
            acts = acts / norms[idx]
        return _TopKDecode.apply(acts, idx, self.W_dec)

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x = step_input.sae_in
        acts, idx, norms = self._active(x)
        sae_out = self._decode_active(acts, idx, norms) + self.b_dec
        mse_loss = (sae_out - x).pow(2).sum(-1).mean()
        losses = {"mse_loss": mse_loss, "auxiliary_reconstruction_loss": self._aux_loss(x, sae_out, norms,
                                                                                        step_input.dead_neuron_mask)}
        feature_acts = _sparse_codes(idx, acts.detach(), self.cfg.d_sae)
        return TrainStepOutput(sae_in=x, sae_out=sae_out, feature_acts=feature_acts, hidden_pre=acts.detach(),
                               loss=sum(losses.values()), losses=losses)

    def _aux_loss(self, x: Tensor, sae_out: Tensor, norms: Tensor, dead: Tensor | None) -> Tensor:
        """SAELens's AuxK loss: the top ``d_in // 2`` dead features reconstruct the live ones' residual."""
        if dead is None or (n_dead := int(dead.sum())) == 0:
            return sae_out.new_tensor(0.0)
        dead_idx = dead.nonzero().squeeze(-1)
        k_aux = min(x.shape[-1] // 2, n_dead)
        scale = min(n_dead / (x.shape[-1] // 2), 1.0)
        sae_in = x - self.b_dec * self.cfg.apply_b_dec_to_input
        pre = (sae_in @ self.W_enc[:, dead_idx] + self.b_enc[dead_idx]) * norms[dead_idx]
        vals, j = pre.topk(k_aux, dim=-1, sorted=False)
        idx = dead_idx[j]
        recons = self._decode_active(vals, idx, norms)  # no ReLU here, as in SAELens
        residual = (x - sae_out).detach()
        return self.cfg.aux_loss_coefficient * scale * (recons - residual).pow(2).sum(-1).mean()


register_sae_training_class("topk_sparse", SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig)
