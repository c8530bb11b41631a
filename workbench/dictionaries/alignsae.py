"""AlignSAE (Yang et al. 2025): an SAE whose first K codes are concept slots, bound to labelled concepts.

Codes ``z = ReLU(W_enc h + b_enc)`` (``apply_b_dec_to_input=False``: the paper's encoder reads ``h`` as it is).
Codes ``0..K-1`` are the concept slots, one per concept (K = ``len(concepts)``: the six biography relations, the
world's topics, any labelled set), the rest the free bank. Loss terms, of the paper's text by default:

- reconstruction ``||h - h_hat||^2`` and an L1 penalty on the codes (``l1_scope="all"``; the official code's
  ``"free"`` puts it on the free bank only);
- binding ``CE(softmax(z_concept), concept)`` (``binding="ce"``; the official 1-hop code's ``"mse"`` is the MSE
  between ``z_concept`` and the concept's one-hot), computed on the slots' pre-activations: through the ReLU a slot
  that is off on its concept's prompts gets no gradient and would stay off (the official code has no ReLU at all),
  and a zero logit for "no slot on" joins the softmax, so the right slot must be on as well as above the others;
- decorrelation ``||corr(z_concept, z_free)||_F^2``, Pearson correlations over the batch;
- value ``CE(V(z_concept), value)``: a small value head ``V`` (``Linear(K, value_hidden) -> ReLU ->
  Linear(value_hidden, n_values)``) must predict the answer (e.g. its first token) from the slots alone.

Rows labelled ``-1`` (e.g. biography tokens mixed into a batch of QA prompts, see :class:`MixedSource`) count for
reconstruction, sparsity and decorrelation only. The two-stage curriculum of the paper (reconstruction and sparsity
first, then every term) is a pair of :class:`~workbench.dictionaries.training.Stage` s from :func:`alignsae_stages`,
trained by the one loop. Registered with SAELens as ``alignsae``; a trained dictionary saves as SAELens's plain
``standard`` SAE (the value head is a training device and is left out) with the slot layout in its
``cfg.json`` metadata (``concepts``, ``concept_slots``), so it loads without this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from sae_lens.registry import register_sae_training_class
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput
from sae_lens.saes.standard_sae import StandardSAEConfig, StandardTrainingSAE, StandardTrainingSAEConfig
from torch import Tensor, nn
from typing_extensions import override

from workbench.dictionaries.training import ActivationBatch, ActivationSource, Stage

UNLABELLED = -1
"""The label of a row that carries no concept (or no value): it only counts for reconstruction and sparsity."""

ALIGN_TERMS = ("binding", "decorrelation", "value")
"""The coefficients stage 1 switches off."""


@dataclass
class AlignSAETrainingSAEConfig(StandardTrainingSAEConfig):
    """A standard SAE config plus the concept slots and the alignment terms."""

    concepts: tuple[str, ...] = ()
    """Concept names, one slot each, in slot order (codes ``0..K-1``); K = ``len(concepts)`` >= 1."""
    concept_label: str = "concept"
    """Name of the batch label holding each row's concept id (``0..K-1``, or -1 for none)."""
    value_label: str = "value"
    """Name of the batch label holding each row's value class (e.g. the answer's first token; -1 for none)."""
    n_values: int = 0
    """Classes of the value label (e.g. the vocabulary size); 0: no value head and no value loss."""
    value_hidden: int = 64
    """Hidden width of the value head."""
    binding: str = "ce"
    """``"ce"``: cross-entropy of ``softmax(z_concept)`` (the paper's text); ``"mse"``: MSE to the one-hot (the
    official 1-hop code)."""
    l1_scope: str = "all"
    """``"all"``: L1 on every code (the paper's text); ``"free"``: on the free bank only (the official code)."""
    binding_coefficient: float = 1.0
    """Weight of the binding loss (stage 2)."""
    decorrelation_coefficient: float = 1.0
    """Weight of the decorrelation loss (stage 2)."""
    value_coefficient: float = 0.5
    """Weight of the value loss (stage 2; the official code's 0.5)."""
    apply_b_dec_to_input: bool = False

    @override
    @classmethod
    def architecture(cls) -> str:
        return "alignsae"

    def __post_init__(self) -> None:
        self.concepts = tuple(self.concepts)
        k = len(self.concepts)
        if k < 1:
            raise ValueError("an AlignSAE needs concepts=(...): one name per concept slot (e.g. the relations), got none")
        if len(set(self.concepts)) != k:
            repeated = sorted({c for c in self.concepts if self.concepts.count(c) > 1})
            raise ValueError(f"concept names must be unique, got {list(self.concepts)} ({repeated} repeated)")
        if self.d_sae <= k:
            raise ValueError(f"d_sae={self.d_sae} leaves no free bank beside the K={k} concept slots; use d_sae > {k}")
        if self.binding not in ("ce", "mse"):
            raise ValueError(f"binding must be 'ce' (the paper's text) or 'mse' (the official code), got {self.binding!r}")
        if self.l1_scope not in ("all", "free"):
            raise ValueError(f"l1_scope must be 'all' (the paper's text) or 'free' (the official code), got "
                             f"{self.l1_scope!r}")
        if self.n_values < 0 or self.value_hidden < 1:
            raise ValueError(f"need n_values >= 0 (0: no value head) and value_hidden >= 1, got {self.n_values}, "
                             f"{self.value_hidden}")
        if self.concept_label == self.value_label:
            raise ValueError(f"concept_label and value_label must differ, both are {self.concept_label!r}")
        super().__post_init__()
        self.metadata.concepts = list(self.concepts)
        self.metadata.concept_slots = list(range(k))

    @override
    def get_inference_config_class(self) -> type[StandardSAEConfig]:
        return StandardSAEConfig


class AlignSAETrainingSAE(StandardTrainingSAE):
    """Standard ReLU SAE maths; the loss adds binding, decorrelation and value terms on the K concept slots."""

    cfg: AlignSAETrainingSAEConfig

    @property
    def n_concepts(self) -> int:
        return len(self.cfg.concepts)

    @override
    def initialize_weights(self) -> None:
        super().initialize_weights()
        if self.cfg.n_values:
            self.value_head = nn.Sequential(
                nn.Linear(self.n_concepts, self.cfg.value_hidden), nn.ReLU(),
                nn.Linear(self.cfg.value_hidden, self.cfg.n_values)).to(self.device, self.dtype)

    @override
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return super().get_coefficients() | {"binding": self.cfg.binding_coefficient,
                                             "decorrelation": self.cfg.decorrelation_coefficient,
                                             "value": self.cfg.value_coefficient if self.cfg.n_values else 0.0}

    def _label(self, step_input: TrainStepInput, name: str, n_rows: int, n_classes: int, needed_by: str) -> Tensor:
        labels = getattr(step_input, "labels", None) or {}
        if name not in labels:
            raise ValueError(f"the AlignSAE's {needed_by} loss needs labels[{name!r}] (given: {sorted(labels)}): train "
                             f"on TensorSource(acts, labels={{{name!r}: ids}}) or MixedSource, or set its coefficient "
                             f"to 0 (stage 1)")
        lab = labels[name]
        if lab.shape != (n_rows,):
            raise ValueError(f"labels[{name!r}] has shape {tuple(lab.shape)} for a batch of {n_rows} rows: one label "
                             "per row is needed")
        bad = (lab < UNLABELLED) | (lab >= n_classes)
        if bad.any():
            valid = (f"concept ids 0..{n_classes - 1} for {list(self.cfg.concepts)}" if name == self.cfg.concept_label
                     else f"value classes 0..{n_classes - 1} (n_values={n_classes})")
            raise ValueError(f"labels[{name!r}] holds {sorted(set(lab[bad].tolist()))[:10]}, outside {valid} "
                             f"(or -1 for an unlabelled row); map names to ids with concept_ids(names, concepts)")
        return lab

    @override
    def calculate_aux_loss(self, step_input: TrainStepInput, feature_acts: torch.Tensor, hidden_pre: torch.Tensor,
                           sae_out: torch.Tensor) -> dict[str, torch.Tensor]:
        coef, k, n = step_input.coefficients, self.n_concepts, len(feature_acts)
        weighted = feature_acts * self.W_dec.norm(dim=1)
        if self.cfg.l1_scope == "free":
            weighted = weighted[:, k:]
        losses = {"l1_loss": coef["l1"] * weighted.sum(-1).mean()}
        z_concept = feature_acts[:, :k]
        zero = feature_acts.new_zeros(())
        if coef.get("binding", 0.0):
            concept = self._label(step_input, self.cfg.concept_label, n, k, "binding")
            # on the slots' pre-activations: a slot that is off (negative) on its concept's prompts still gets the
            # gradient that turns it on; through the ReLU it would get none, and stay dead
            losses["binding_loss"] = coef["binding"] * binding_loss(hidden_pre[:, :k], concept, self.cfg.binding)
        if coef.get("decorrelation", 0.0):
            losses["decorrelation_loss"] = coef["decorrelation"] * decorrelation_loss(z_concept, feature_acts[:, k:])
        if coef.get("value", 0.0) and self.cfg.n_values:
            value = self._label(step_input, self.cfg.value_label, n, self.cfg.n_values, "value")
            losses["value_loss"] = coef["value"] * value_loss(self.value_head, z_concept, value)
        return losses | {name: zero for name in ("binding_loss", "decorrelation_loss", "value_loss")
                         if name not in losses}

    @override
    def process_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        for name in [k for k in state_dict if k.startswith("value_head.")]:
            del state_dict[name]  # a training device: the saved dictionary is a plain standard SAE
        super().process_state_dict_for_saving(state_dict)


def binding_loss(z_concept: Float[Tensor, "batch k"], concept: Int[Tensor, " batch"], kind: str = "ce") -> Tensor:
    """How far each labelled row's concept slots are from naming its concept (rows labelled -1 are skipped; 0 when
    none is labelled). ``"ce"``: cross-entropy of ``softmax([z_concept, 0])`` against the concept, where the extra
    zero logit is "no slot on" (the AlignSAE passes pre-activations, for which 0 is the ReLU's threshold: the right
    slot must be on, and above the others); ``"mse"``: mean squared error between ``z_concept`` and the concept's
    one-hot (the official code's)."""
    mask = concept >= 0
    if not mask.any():
        return z_concept.sum() * 0
    z, y = z_concept[mask], concept[mask]
    if kind == "ce":  # a zero logit stands for "no slot on": the right slot must be above the ReLU's threshold too
        return F.cross_entropy(torch.cat([z, z.new_zeros(len(z), 1)], dim=1), y)
    if kind == "mse":
        return F.mse_loss(z, F.one_hot(y, z.shape[-1]).to(z.dtype))
    raise ValueError(f"binding kind must be 'ce' or 'mse', got {kind!r}")


def decorrelation_loss(z_concept: Float[Tensor, "batch k"], z_free: Float[Tensor, "batch f"],
                       eps: float = 1e-6) -> Tensor:
    """``||corr(z_concept, z_free)||_F^2``: the squared Pearson correlations, over the batch, between every concept
    slot and every free code, summed. A code constant over the batch (e.g. one that never fires) correlates with
    nothing."""
    def standardise(z: Tensor) -> Tensor:
        z = z - z.mean(0)
        return z / (z.pow(2).mean(0).sqrt() + eps)

    corr = standardise(z_concept).T @ standardise(z_free) / len(z_concept)
    return corr.pow(2).sum()


def value_loss(head: nn.Module, z_concept: Float[Tensor, "batch k"], value: Int[Tensor, " batch"]) -> Tensor:
    """Cross-entropy of the value head's prediction from the concept slots alone, on rows with a value (>= 0)."""
    mask = value >= 0
    if not mask.any():
        return z_concept.sum() * 0
    return F.cross_entropy(head(z_concept[mask]), value[mask])


def concept_ids(names: Sequence[str], concepts: Sequence[str]) -> Int[Tensor, " n"]:
    """Concept ids (slot indices) of ``names``; an unknown name raises, listing the concepts."""
    index = {c: i for i, c in enumerate(concepts)}
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise ValueError(f"unknown concept(s) {unknown[:10]}; this AlignSAE's concepts are {list(concepts)}")
    return torch.tensor([index[n] for n in names], dtype=torch.long)


def check_labels(concept: Tensor, n_rows: int, concepts: Sequence[str]) -> None:
    """Raise unless ``concept`` holds one id per row, in ``0..K-1`` (or -1), with every concept present."""
    k = len(concepts)
    if concept.shape != (n_rows,):
        raise ValueError(f"got {tuple(concept.shape)} concept labels for {n_rows} activation rows: one per row is needed")
    bad = (concept < UNLABELLED) | (concept >= k)
    if bad.any():
        raise ValueError(f"concept labels {sorted(set(concept[bad].tolist()))[:10]} are outside 0..{k - 1} for the "
                         f"K={k} concepts {list(concepts)}")
    missing = [c for i, c in enumerate(concepts) if not (concept == i).any()]
    if missing:
        raise ValueError(f"concept(s) {missing} have no labelled rows: each of the K={k} slots needs examples to bind "
                         "to (or leave them out of concepts)")


def alignsae_stages(reconstruction_steps: int, alignment_steps: int) -> tuple[Stage, Stage]:
    """The paper's curriculum: ``reconstruction`` (reconstruction + L1; binding, decorrelation and value off), then
    ``alignment`` (every term, at the SAE config's coefficients)."""
    return (Stage("reconstruction", reconstruction_steps, dict.fromkeys(ALIGN_TERMS, 0.0)),
            Stage("alignment", alignment_steps))


@dataclass
class MixedSource:
    """Batches of labelled rows (QA prompts) topped up with unlabelled rows (biography tokens), whose labels are -1.

    ``labelled_fraction`` of each batch comes from ``labelled`` (which must carry labels), the rest from
    ``unlabelled`` (None: every row from ``labelled``). Deterministic in the step, as the loop needs.
    """

    labelled: ActivationSource
    unlabelled: ActivationSource | None = None
    labelled_fraction: float = 0.5
    d_in: int = field(init=False)
    d_out: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not 0 < self.labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if self.unlabelled is not None and self.unlabelled.d_in != self.labelled.d_in:
            raise ValueError(f"labelled rows have d_in={self.labelled.d_in} but unlabelled rows d_in="
                             f"{self.unlabelled.d_in}: both must come from the same hook")
        self.d_in = self.labelled.d_in

    def batch(self, step: int, batch_size: int) -> ActivationBatch:
        n_lab = batch_size if self.unlabelled is None else max(1, round(batch_size * self.labelled_fraction))
        lab = self.labelled.batch(step, n_lab)
        if lab.labels is None:
            raise ValueError("MixedSource's labelled source gives no labels: build it as TensorSource(acts, labels=...)")
        if n_lab == batch_size:
            return lab
        rest = self.unlabelled.batch(step, batch_size - n_lab)
        fill = {k: torch.full((len(rest.inputs),), UNLABELLED, dtype=v.dtype, device=v.device)
                for k, v in lab.labels.items()}
        labels = {k: torch.cat([v, fill[k].to(v.device)]) for k, v in lab.labels.items()}
        return ActivationBatch(torch.cat([lab.inputs, rest.inputs.to(lab.inputs.device)]), None, labels)


register_sae_training_class("alignsae", AlignSAETrainingSAE, AlignSAETrainingSAEConfig)
