"""A standard ReLU + L1 SAE with tied weights (``W_enc = W_dec^T``), as Cunningham et al. (2023) train it.

Registered with SAELens as ``standard_tied``. Only ``W_dec`` is a free parameter; on saving, ``W_enc`` is
written as ``W_dec^T`` and the architecture as ``standard``, so the file loads as SAELens's plain
``StandardSAE`` without this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.registry import register_sae_training_class
from sae_lens.saes.standard_sae import StandardSAEConfig, StandardTrainingSAE, StandardTrainingSAEConfig
from typing_extensions import override


@dataclass
class TiedStandardTrainingSAEConfig(StandardTrainingSAEConfig):
    @override
    @classmethod
    def architecture(cls) -> str:
        return "standard_tied"

    @override
    def get_inference_config_class(self) -> type[StandardSAEConfig]:
        return StandardSAEConfig



class TiedStandardTrainingSAE(StandardTrainingSAE):
    """The encoder is ``encoder_scale * W_dec^T``; ``W_enc`` is a frozen mirror written only on saving.

    ``encoder_scale`` (1 while training) absorbs an input rescaling folded in after training.
    """

    @override
    def initialize_weights(self) -> None:
        super().initialize_weights()
        self.W_enc.requires_grad_(False)
        self.register_buffer("encoder_scale", torch.ones((), dtype=self.dtype, device=self.device))

    @override
    def encode_with_hidden_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(sae_in @ self.W_dec.T * self.encoder_scale + self.b_enc)
        return self.hook_sae_acts_post(self.activation_fn(hidden_pre)), hidden_pre

    @override
    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        super().fold_activation_norm_scaling_factor(scaling_factor)
        self.encoder_scale *= scaling_factor**2  # W_dec^T shrank by the factor where W_enc should have grown

    @override
    def process_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        state_dict["W_enc"] = (self.W_dec.detach().T * self.encoder_scale).contiguous().clone()
        state_dict.pop("encoder_scale", None)
        super().process_state_dict_for_saving(state_dict)


register_sae_training_class("standard_tied", TiedStandardTrainingSAE, TiedStandardTrainingSAEConfig)
