"""ReLU-family SAEs (standard, tied, gated, paper gated) with a training step that touches only the active codes.

After the first dense stretch of training (the L1 warm-up), only L0 ~ 5-100 of a token's d_sae codes are
non-zero, yet a dense step costs six (SAELens's gated: thirteen) ``batch x d_in x d_sae`` matmuls. Here only
the encoder's forward matmul stays dense (every pre-activation is needed to know which codes are active); the
active codes are kept as ``(row, feature, value)`` entries; the decoder reads their rows of ``W_dec``
(``embedding_bag``); the backward pass gets the codes' gradients by sampled products (``sampled_addmm``) and
scatters into the active columns of ``W_enc`` and rows of ``W_dec`` by sparse matmuls. The maths is the dense
class's (SAELens's, or ours for ``standard_tied`` and ``gated_paper``), loss terms named as there; outputs,
losses and every gradient agree with the dense classes (tested), the decoder norms' gradient in the L1 penalty
included. Each saves as SAELens's plain ``standard`` or ``gated``.

Registered as ``standard_sparse``, ``standard_tied_sparse``, ``gated_sparse`` and ``gated_paper_sparse``.

A step first counts the batch's active codes after the encoder matmul; when they are denser than
``sparse_step_below`` (default: the crossover measured on this machine, :data:`SPARSE_STEP_BELOW` = 15% and
:data:`GATED_SPARSE_STEP_BELOW` = 20%) it takes the dense class's own step instead (which recomputes the encoder
matmul: one extra matmul while codes are dense, at the start of training).
Under ``torch.autocast`` the encoder matmul runs in the autocast dtype; everything sparse runs in fp32.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from sae_lens.registry import register_sae_training_class
from sae_lens.saes.gated_sae import GatedSAEConfig, GatedTrainingSAE, GatedTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.saes.standard_sae import StandardSAEConfig, StandardTrainingSAE, StandardTrainingSAEConfig
from torch import Tensor
from typing_extensions import override

from workbench.dictionaries.gated_paper import GatedPaperTrainingSAE, GatedPaperTrainingSAEConfig
from workbench.dictionaries.tied import TiedStandardTrainingSAE, TiedStandardTrainingSAEConfig

SPARSE_STEP_BELOW = 0.15
"""Fraction of non-zero codes below which a standard (or tied) SAE's step is sparse: the measured crossover of
the sparse and dense steps. Forward + backward CPU seconds at batch 4096, fp32, one thread, on this repo's AMD
EPYC (avx512) machine (``benchmarks/bench_dictionary_training.py --crossover``, 2026-11-27), dense SAELens
``standard`` against ``standard_sparse``:

- d_in 256, d_sae 2048: dense 0.41 s; sparse 0.08 / 0.13 / 0.19 / 0.33 / 0.47 s at 0.5 / 5 / 10 / 20 / 30% of
  codes non-zero: crossover 26%;
- d_in 768, d_sae 24576: dense 10.9 s; sparse 2.4 / 5.5 / 8.1 / 15.1 / 25.2 s at the same densities: crossover 14%.

At 0.5% (L0 123 of 24576) the sparse step is 4.5x faster (gated: 8x). Adam costs both paths the same and is
left out."""

GATED_SPARSE_STEP_BELOW = 0.2
"""The same for the gated SAEs (SAELens ``gated`` against ``gated_sparse``; a dense gated step has ~13 matmuls):

- d_in 256, d_sae 2048: dense 0.78 s; sparse 0.07 / 0.13 / 0.21 / 0.39 / 0.57 s at 0.5 / 5 / 10 / 20 / 30%:
  no crossover up to 30%;
- d_in 768, d_sae 24576: dense 22.7 s; sparse 2.7 / 7.2 / 13.3 / 26.1 / 35.6 s: crossover 17%."""


class _Pattern(NamedTuple):
    """Where a batch's active codes are, and the index arrays the sparse products need."""

    indices: Tensor
    """``[2, nnz]``: (row, feature) of each active code, in row-major order (as ``nonzero()`` gives them)."""
    crow: Tensor
    """``[batch + 1]``: row ``b``'s entries are ``crow[b]:crow[b + 1]``."""
    by_feature: Tensor
    """``[nnz]``: the permutation that orders the entries by feature (rows ascending within a feature)."""
    rows_by_feature: Tensor
    """``[nnz]``: the entries' rows in that order."""
    ccol: Tensor
    """``[d_sae + 1]``: in that order, feature ``j``'s entries are ``ccol[j]:ccol[j + 1]``."""
    shape: tuple[int, int]
    """``(batch, d_sae)``."""

    @classmethod
    def of(cls, active: Bool[Tensor, "batch d_sae"]) -> _Pattern:
        indices = active.nonzero().T.contiguous()
        rows, feats = indices
        by_feature = torch.argsort(feats, stable=True)
        return cls(indices, _offsets(rows, active.shape[0]), by_feature, rows[by_feature],
                   _offsets(feats, active.shape[1]), tuple(active.shape))

    @property
    def rows(self) -> Tensor:
        return self.indices[0]

    @property
    def feats(self) -> Tensor:
        return self.indices[1]

    def coo(self, values: Float[Tensor, " nnz"]) -> Tensor:
        """The sparse ``[batch, d_sae]`` matrix of ``values`` (for a step's ``feature_acts``)."""
        return torch.sparse_coo_tensor(self.indices, values, self.shape, check_invariants=False, is_coalesced=True)

    def by_row(self, values: Float[Tensor, " nnz"]) -> Tensor:
        """The sparse ``[batch, d_sae]`` CSR matrix of ``values``."""
        return _csr(self.crow, self.feats, values, self.shape)

    def transposed(self, values: Float[Tensor, " nnz"]) -> Tensor:
        """The sparse ``[d_sae, batch]`` CSR matrix of ``values``, transposed (faster than ``coo(values).t()``)."""
        return _csr(self.ccol, self.rows_by_feature, values[self.by_feature], self.shape[::-1])


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta": the two products are checked against dense in the tests
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _offsets(sorted_index: Int[Tensor, " nnz"], n: int) -> Int[Tensor, " n_plus_1"]:
    """CSR offsets of a sorted index (a histogram's cumulative sum, from 0)."""
    counts = torch.bincount(sorted_index, minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class _ActiveProjection(torch.autograd.Function):
    """``proj[rows, feats]`` where ``proj = sae_in @ W_T.T`` (with ``sae_in = x - b_dec_in``) is already computed;
    the backward passes gradients to ``W_T`` and ``b_dec_in`` through the active entries only."""

    @staticmethod
    def forward(ctx, proj: Tensor, pattern: _Pattern, sae_in: Tensor, b_dec_in: Tensor, W_T: Tensor) -> Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(sae_in, W_T)
        return proj[pattern.rows, pattern.feats].float()

    @staticmethod
    def backward(ctx, grad: Tensor):
        sae_in, W_T = ctx.saved_tensors
        p: _Pattern = ctx.pattern
        grad = grad.float()
        grad_b_dec = grad_W = None
        if ctx.needs_input_grad[3]:  # only the batch sum of d loss / d sae_in is needed: no [batch, d_in] product
            col_sums = torch.zeros(p.shape[1], dtype=grad.dtype, device=grad.device).index_add_(0, p.feats, grad)
            grad_b_dec = -(col_sums @ W_T)
        if ctx.needs_input_grad[4]:
            grad_W = p.transposed(grad) @ sae_in
        return None, None, None, grad_b_dec, grad_W


class _ActiveDecode(torch.autograd.Function):
    """``codes @ W_dec`` for codes given as ``values`` on a pattern, without the dense ``[batch, d_sae]`` codes."""

    @staticmethod
    def forward(ctx, values: Tensor, pattern: _Pattern, W_dec: Tensor) -> Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(values, W_dec)
        with torch.autocast(W_dec.device.type, enabled=False):
            return F.embedding_bag(pattern.feats, W_dec, pattern.crow[:-1], mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        values, W_dec = ctx.saved_tensors
        p: _Pattern = ctx.pattern
        grad_out = grad_out.float().contiguous()
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:  # <grad_out[row], W_dec[feature]> at each entry, without gathering either
            grad_values = torch.sparse.sampled_addmm(p.by_row(torch.zeros_like(values)), grad_out, W_dec.T).values()
        if ctx.needs_input_grad[2]:
            grad_W = p.transposed(values) @ grad_out
        return grad_values, None, grad_W


def _row_sums(values: Float[Tensor, " nnz"], pattern: _Pattern) -> Float[Tensor, " batch"]:
    return values.new_zeros(pattern.shape[0]).index_add(0, pattern.rows, values)


@dataclass
class _SparseStepConfig:
    """The field every sparse ReLU-family config adds (a mixin placed before the SAELens config class)."""

    sparse_step_below: float = SPARSE_STEP_BELOW
    """A step is sparse when the fraction of non-zero codes in its batch is below this, else it is the dense
    class's own step; 0 makes every step dense, 1 every step sparse (default: the measured crossover,
    :data:`SPARSE_STEP_BELOW`, or :data:`GATED_SPARSE_STEP_BELOW` for the gated SAEs)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.sparse_step_below <= 1:
            raise ValueError(f"sparse_step_below must be in [0, 1], got {self.sparse_step_below!r} (0: always dense, "
                             "1: always sparse; the default is the measured crossover)")
        if self.normalize_activations not in ("none", "expected_average_only_in"):
            raise ValueError(f"{self.architecture()} trains on activations normalised outside the SAE, but "
                             f"normalize_activations={self.normalize_activations!r}; use 'none' (our loop normalises "
                             "with DictionaryTrainConfig.normalize_activations) or 'expected_average_only_in'")


class _SparseReLUStep:
    """The sparse training step shared by the ReLU family (a mixin placed before the SAELens class).

    A family gives its encoder rows and the bias deciding which codes are active (``_encoder``) and its losses
    on the active entries (``_sparse_step``). ``feature_acts`` and ``hidden_pre`` of a sparse step are sparse
    COO tensors holding the active entries only (a dense step returns the dense class's dense ones).
    """

    def _encoder(self) -> tuple[Float[Tensor, "d_sae d_in"], Float[Tensor, " d_sae"]]:
        raise NotImplementedError

    def _sparse_step(self, step_input: TrainStepInput, pattern: _Pattern,
                     proj: Float[Tensor, " nnz"]) -> TrainStepOutput:
        raise NotImplementedError

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x = step_input.sae_in
        if x.dim() != 2:
            raise ValueError(f"{self.cfg.architecture()} trains on [batch, d_in] inputs, got shape {tuple(x.shape)}")
        W_T, gate_bias = self._encoder()
        b_dec_in = self.b_dec * self.cfg.apply_b_dec_to_input
        with torch.no_grad():
            sae_in = x.to(self.dtype) - b_dec_in
            proj = sae_in @ W_T.T  # the one dense matmul, in the autocast dtype when there is one
            active = proj > -gate_bias
            fraction = torch.count_nonzero(active).item() / active.numel()
        if fraction >= self.cfg.sparse_step_below:
            del proj, active
            return super().training_forward_pass(step_input)
        pattern = _Pattern.of(active)
        proj_active = _ActiveProjection.apply(proj, pattern, sae_in, b_dec_in, W_T)
        del proj, active  # the [batch, d_sae] tensors: not kept through the rest of the step
        return self._sparse_step(step_input, pattern, proj_active)

    def _mse(self, x: Tensor, sae_out: Tensor) -> Tensor:
        return (sae_out - x).pow(2).sum(-1).mean()


class _SparseStandardStep(_SparseReLUStep):
    """``codes = ReLU(proj + b_enc)``, loss ``MSE + l1 * ||codes * ||W_dec rows|| ||_p`` (SAELens's standard)."""

    @override
    def _encoder(self) -> tuple[Tensor, Tensor]:
        return self.W_enc.T, self.b_enc

    @override
    def _sparse_step(self, step_input: TrainStepInput, pattern: _Pattern, proj: Tensor) -> TrainStepOutput:
        x = step_input.sae_in
        pre = proj + self.b_enc[pattern.feats]
        codes = pre.relu()
        sae_out = _ActiveDecode.apply(codes, pattern, self.W_dec) + self.b_dec
        mse_loss = self._mse(x, sae_out)
        weighted = (codes * self.W_dec.norm(dim=1)[pattern.feats]).abs()
        p = self.cfg.lp_norm
        if p == 1:
            sparsity = _row_sums(weighted, pattern)
        else:  # rows without active codes have norm 0 (and no gradient, as torch.norm gives)
            sums = _row_sums(weighted.pow(p), pattern)
            sparsity = torch.where(sums > 0, sums, 1.0).pow(1 / p) * (sums > 0)
        l1_loss = (step_input.coefficients["l1"] * sparsity).mean()
        losses = {"mse_loss": mse_loss, "l1_loss": l1_loss}
        return TrainStepOutput(sae_in=x, sae_out=sae_out, feature_acts=pattern.coo(codes.detach()),
                               hidden_pre=pattern.coo(pre.detach()), loss=mse_loss + l1_loss, losses=losses)


class _SparseGatedStep(_SparseReLUStep):
    """Gate ``pi = proj + b_gate``, codes ``1[pi > 0] * ReLU(proj * exp(r_mag) + b_mag)``; the active entries are
    the gate's, which also carry the L1 penalty on ``ReLU(pi)`` and the auxiliary reconstruction from it."""

    _l1_uses_decoder_norms: bool
    """SAELens's ``gated`` weights the L1 penalty by the decoder-row norms; the paper's does not."""
    _aux_trains_decoder: bool
    """SAELens's auxiliary reconstruction trains ``W_dec`` and ``b_dec``; the paper's goes through a frozen copy."""

    @override
    def _encoder(self) -> tuple[Tensor, Tensor]:
        return self.W_enc.T, self.b_gate

    @override
    def _sparse_step(self, step_input: TrainStepInput, pattern: _Pattern, proj: Tensor) -> TrainStepOutput:
        x, feats = step_input.sae_in, pattern.feats
        gate_acts = (proj + self.b_gate[feats]).relu()  # all > 0: the active entries are where the gate is open
        magnitude_pre = proj * self.r_mag.exp()[feats] + self.b_mag[feats]
        codes = magnitude_pre.relu()
        sae_out = _ActiveDecode.apply(codes, pattern, self.W_dec) + self.b_dec
        mse_loss = self._mse(x, sae_out)
        penalty = gate_acts * self.W_dec.norm(dim=1)[feats] if self._l1_uses_decoder_norms else gate_acts
        l1_loss = step_input.coefficients["l1"] * penalty.sum() / len(x)
        W_dec, b_dec = (self.W_dec, self.b_dec) if self._aux_trains_decoder else (self.W_dec.detach(),
                                                                                  self.b_dec.detach())
        aux_loss = self._mse(x, _ActiveDecode.apply(gate_acts, pattern, W_dec) + b_dec)
        losses = {"mse_loss": mse_loss, "l1_loss": l1_loss, "auxiliary_reconstruction_loss": aux_loss}
        return TrainStepOutput(sae_in=x, sae_out=sae_out, feature_acts=pattern.coo(codes.detach()),
                               hidden_pre=pattern.coo(magnitude_pre.detach()), loss=mse_loss + l1_loss + aux_loss,
                               losses=losses)


@dataclass
class StandardSparseTrainingSAEConfig(_SparseStepConfig, StandardTrainingSAEConfig):
    """``StandardTrainingSAEConfig`` named ``standard_sparse`` (inference config: ``standard``)."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return "standard_sparse"

    @override
    def get_inference_config_class(self) -> type[StandardSAEConfig]:
        return StandardSAEConfig


class StandardSparseTrainingSAE(_SparseStandardStep, StandardTrainingSAE):
    """SAELens's standard SAE whose training step, once codes are sparse, costs one dense matmul instead of six."""


@dataclass
class TiedStandardSparseTrainingSAEConfig(_SparseStepConfig, TiedStandardTrainingSAEConfig):
    """``standard_tied`` named ``standard_tied_sparse`` (inference config: ``standard``)."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return "standard_tied_sparse"


class TiedStandardSparseTrainingSAE(_SparseStandardStep, TiedStandardTrainingSAE):
    """The tied standard SAE (``W_enc = encoder_scale * W_dec^T``) with the sparse training step."""

    @override
    def _encoder(self) -> tuple[Tensor, Tensor]:
        return self.W_dec * self.encoder_scale, self.b_enc


@dataclass
class GatedSparseTrainingSAEConfig(_SparseStepConfig, GatedTrainingSAEConfig):
    """``GatedTrainingSAEConfig`` named ``gated_sparse`` (inference config: ``gated``)."""

    sparse_step_below: float = GATED_SPARSE_STEP_BELOW

    @override
    @classmethod
    def architecture(cls) -> str:
        return "gated_sparse"

    @override
    def get_inference_config_class(self) -> type[GatedSAEConfig]:
        return GatedSAEConfig


class GatedSparseTrainingSAE(_SparseGatedStep, GatedTrainingSAE):
    """SAELens's gated SAE (decoder-norm L1, auxiliary term training the decoder) with the sparse training step."""

    _l1_uses_decoder_norms = True
    _aux_trains_decoder = True


@dataclass
class GatedPaperSparseTrainingSAEConfig(_SparseStepConfig, GatedPaperTrainingSAEConfig):
    """``gated_paper`` named ``gated_paper_sparse`` (inference config: ``gated``)."""

    sparse_step_below: float = GATED_SPARSE_STEP_BELOW

    @override
    @classmethod
    def architecture(cls) -> str:
        return "gated_paper_sparse"


class GatedPaperSparseTrainingSAE(_SparseGatedStep, GatedPaperTrainingSAE):
    """The paper's gated SAE (plain L1 on the gate, frozen-decoder auxiliary term) with the sparse training step."""

    _l1_uses_decoder_norms = False
    _aux_trains_decoder = False


register_sae_training_class("standard_sparse", StandardSparseTrainingSAE, StandardSparseTrainingSAEConfig)
register_sae_training_class("standard_tied_sparse", TiedStandardSparseTrainingSAE, TiedStandardSparseTrainingSAEConfig)
register_sae_training_class("gated_sparse", GatedSparseTrainingSAE, GatedSparseTrainingSAEConfig)
register_sae_training_class("gated_paper_sparse", GatedPaperSparseTrainingSAE, GatedPaperSparseTrainingSAEConfig)
