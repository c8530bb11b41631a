"""A transcoder training class (Dunefsky et al. 2024): reads the MLP input, predicts the MLP output.

Registered with SAELens as ``transcoder``: ``ReLU(x_in W_enc + b_enc) W_dec + b_dec`` predicts ``x_out``
with loss ``||x_out - x_out_hat||^2 + lambda * sum_i f_i ||d_i||``. The one training loop gives it ``x_in``
as the step input's ``sae_in`` and ``x_out`` as its ``targets`` (``TensorSource(acts_in, targets=acts_out)``,
or ``ModelActivationSource(..., target_hook_name=...)``); a trained transcoder saves as SAELens's inference
``Transcoder`` (``apply_b_dec_to_input=False``) and loads without this package.
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
        """Predict ``step_input.targets`` from ``step_input.sae_in``; the output's ``sae_in`` is the target, so
        the loop's batch metrics (explained variance) measure the prediction against it."""
        x_in, x_out = step_input.sae_in, getattr(step_input, "targets", None)
        if x_out is None:
            raise ValueError("a transcoder needs targets: pass TensorSource(acts_in, targets=acts_out) (or "
                             "ModelActivationSource(model, tokens, hooks.mlp_in(layer), "
                             "target_hook_name=hooks.mlp_out(layer))) to train_dictionary, or a DictionaryStepInput "
                             "with targets to training_forward_pass")
        if x_out.shape != (len(x_in), self.cfg.d_out):
            raise ValueError(f"a transcoder with d_out={self.cfg.d_out} needs targets of shape ({len(x_in)}, "
                             f"{self.cfg.d_out}) for inputs of shape {tuple(x_in.shape)}, got {tuple(x_out.shape)}")
        feature_acts, hidden_pre = self.encode_with_hidden_pre(x_in)
        out = self.decode(feature_acts)
        mse = (out - x_out).pow(2).sum(-1).mean()
        l1 = step_input.coefficients["l1"] * (feature_acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        return TrainStepOutput(sae_in=x_out, sae_out=out, feature_acts=feature_acts, hidden_pre=hidden_pre,
                               loss=mse + l1, losses={"mse_loss": mse, "l1_loss": l1})

    @override
    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        # inputs and targets were scaled by the same factor s: the codes of raw x_in equal those of s x_in when
        # W_enc grows by s, and the raw prediction is the scaled one divided by s (W_dec and b_dec shrink by s)
        self.W_enc.data *= scaling_factor
        self.W_dec.data /= scaling_factor
        self.b_dec.data /= scaling_factor
        self.cfg.normalize_activations = "none"


register_sae_training_class("transcoder", TranscoderTrainingSAE, TranscoderTrainingSAEConfig)
