"""The Gated SAE exactly as in Rajamanoharan et al. (2024), registered with SAELens as ``gated_paper``.

Same forward pass as SAELens's ``gated`` (``f = 1[pi_gate > 0] * ReLU(W_mag (x - b_dec) + b_mag)``, with
``W_mag = exp(r_mag) * W_gate``), but the paper's loss:

    ||x - x_hat||^2 + lambda * ||ReLU(pi_gate)||_1 + ||x - x_hat_frozen(ReLU(pi_gate))||^2

where the auxiliary reconstruction goes through a *frozen* (detached) copy of the decoder, so it trains
only the gate. SAELens's ``gated`` lets that term train the decoder too (SAELens issue 543) and puts the
decoder norms into the penalty; here the decoder rows are kept at unit norm by the training loop
(``DictionaryTrainConfig.decoder_unit_norm``), which makes the two penalties equal. Inference is
identical, so a trained model saves as SAELens's plain ``gated`` and loads without this package.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sae_lens.registry import register_sae_training_class
from sae_lens.saes.gated_sae import GatedSAEConfig, GatedTrainingSAE, GatedTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput
from typing_extensions import override


@dataclass
class GatedPaperTrainingSAEConfig(GatedTrainingSAEConfig):
    """``GatedTrainingSAEConfig`` whose architecture name is ``gated_paper`` (inference config: ``gated``)."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return "gated_paper"

    @override
    def get_inference_config_class(self) -> type[GatedSAEConfig]:
        return GatedSAEConfig



class GatedPaperTrainingSAE(GatedTrainingSAE):
    """Gated SAE trained with the paper's loss: L1 on ReLU(pi_gate) and a frozen-decoder auxiliary term.

    The gate and magnitude paths share one encoder matmul (``W_mag = exp(r_mag) * W_gate`` makes the
    magnitude pre-activation ``(x - b_dec) W_gate * exp(r_mag) + b_mag``), and the loss reuses that step's
    ``pi_gate``: one ``batch x d_in x d_sae`` product where SAELens's gated computes two (three with its loss).
    """

    _pi_gate: torch.Tensor | None = None

    @override
    def encode_with_hidden_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.process_sae_in(x) @ self.W_enc
        pi_gate = projected + self.b_gate
        magnitude_pre = self.hook_sae_acts_pre(projected * self.r_mag.exp() + self.b_mag)
        feature_acts = self.hook_sae_acts_post((pi_gate > 0).to(self.dtype) * self.activation_fn(magnitude_pre))
        if self.training and torch.is_grad_enabled():
            self._pi_gate = pi_gate  # for this training step's calculate_aux_loss
        return feature_acts, magnitude_pre

    @override
    def calculate_aux_loss(self, step_input: TrainStepInput, feature_acts: torch.Tensor, hidden_pre: torch.Tensor,
                           sae_out: torch.Tensor) -> dict[str, torch.Tensor]:
        x = step_input.sae_in
        pi_gate, self._pi_gate = self._pi_gate, None
        if pi_gate is None or pi_gate.shape[0] != x.shape[0]:  # called outside training_forward_pass
            pi_gate = self.process_sae_in(x) @ self.W_enc + self.b_gate
        gate_acts = torch.relu(pi_gate)
        l1_loss = step_input.coefficients["l1"] * gate_acts.sum(dim=-1).mean()
        frozen_recon = gate_acts @ self.W_dec.detach() + self.b_dec.detach()
        aux = (frozen_recon - x).pow(2).sum(dim=-1).mean()
        return {"l1_loss": l1_loss, "auxiliary_reconstruction_loss": aux}


register_sae_training_class("gated_paper", GatedPaperTrainingSAE, GatedPaperTrainingSAEConfig)
