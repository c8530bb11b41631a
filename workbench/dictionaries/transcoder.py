"""A transcoder training class (Dunefsky et al. 2024): reads the MLP input, predicts the MLP output.

Registered with SAELens as ``transcoder``: ``ReLU(x_in W_enc + b_enc) W_dec + b_dec`` predicts ``x_out``
with loss ``||x_out - x_out_hat||^2 + lambda * sum_i f_i ||d_i||``. The one training loop feeds it batches
``[x_in | x_out]`` (width ``d_in + d_out``: see ``training_input_width``); a trained transcoder saves as
SAELens's inference ``Transcoder`` (``apply_b_dec_to_input=False``) and loads without this package.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sae_lens.registry import register_sae_training_class
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.transcoder import TranscoderConfig
from torch import nn
from typing_extensions import override


@dataclass
class TranscoderTrainingSAEConfig(StandardTrainingSAEConfig):
    """A standard SAE config plus the output width; the decoder bias is never subtracted from the input."""

    d_out: int = 256
    """Width of the predicted activation (the MLP output)."""
    apply_b_dec_to_input: bool = False

    @override
    @classmethod
    def architecture(cls) -> str:
        return "transcoder"

    def __post_init__(self) -> None:
        if self.apply_b_dec_to_input:
            raise ValueError("a transcoder cannot subtract b_dec (width d_out) from its input (width d_in)")
        super().__post_init__()

    @override
    def get_inference_config_class(self) -> type[TranscoderConfig]:
        return TranscoderConfig



class TranscoderTrainingSAE(StandardTrainingSAE):
    """Standard SAE maths with a decoder into another space."""

    cfg: TranscoderTrainingSAEConfig

    @property
    def training_input_width(self) -> int:
        """Width of a training batch: ``[x_in | x_out]``."""
        return self.cfg.d_in + self.cfg.d_out

    @override
    def initialize_weights(self) -> None:
        super().initialize_weights()
        w_dec = torch.empty(self.cfg.d_sae, self.cfg.d_out, dtype=self.dtype, device=self.device)
        nn.init.kaiming_uniform_(w_dec)
        self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(self.cfg.d_out, dtype=self.dtype, device=self.device))
        w_enc = torch.empty(self.cfg.d_in, self.cfg.d_sae, dtype=self.dtype, device=self.device)
        nn.init.kaiming_uniform_(w_enc)
        self.W_enc = nn.Parameter(w_enc)

    @override
    def process_sae_in(self, sae_in: torch.Tensor) -> torch.Tensor:
        return self.hook_sae_input(sae_in.to(self.dtype))

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x_in, x_out = step_input.sae_in[:, : self.cfg.d_in], step_input.sae_in[:, self.cfg.d_in:]
        feature_acts, hidden_pre = self.encode_with_hidden_pre(x_in)
        out = self.decode(feature_acts)
        mse = (out - x_out).pow(2).sum(-1).mean()
        l1 = step_input.coefficients["l1"] * (feature_acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        return TrainStepOutput(sae_in=x_out, sae_out=out, feature_acts=feature_acts, hidden_pre=hidden_pre,
                               loss=mse + l1, losses={"mse_loss": mse, "l1_loss": l1})

    @override
    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        # inputs and outputs were scaled by the same factor: f(s x_in) needs W_enc * s, and y = y_scaled / s
        self.W_enc.data *= scaling_factor
        self.W_dec.data /= scaling_factor
        self.b_dec.data /= scaling_factor
        self.cfg.normalize_activations = "none"


register_sae_training_class("transcoder", TranscoderTrainingSAE, TranscoderTrainingSAEConfig)
