"""Dictionaries as SAELens classes: SAELens's own architectures plus ours, registered by name.

``make_training_sae("gated_paper", d_in=256, d_sae=2048, l1_coefficient=...)`` builds any registered
training SAE; ``save_dictionary`` / ``load_dictionary`` use SAELens's on-disk format (``cfg.json`` +
``sae_weights.safetensors``), so saved dictionaries load with ``sae_lens.SAE.load_from_disk``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sae_lens import SAE
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class
from sae_lens.saes.sae import TrainingSAE

from workbench.dictionaries import gated_paper, sparse_topk, tied, transcoder  # noqa: F401  (register our architectures)


def training_input_width(sae: TrainingSAE) -> int:
    """Width of the activations a training step consumes (``d_in``; a transcoder also takes its target)."""
    return getattr(sae, "training_input_width", sae.cfg.d_in)


def architectures() -> list[str]:
    """Every trainable architecture name (SAELens's and ours)."""
    return sorted(SAE_TRAINING_CLASS_REGISTRY)


def make_training_sae(architecture: str, d_in: int, d_sae: int, device: str = "cpu", **cfg: Any) -> TrainingSAE:
    """A fresh training SAE of a registered ``architecture``; ``cfg`` sets fields of its config class."""
    if architecture not in SAE_TRAINING_CLASS_REGISTRY:
        raise ValueError(f"unknown architecture {architecture!r}; registered: {architectures()}")
    sae_cls, cfg_cls = get_sae_training_class(architecture)
    valid = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(cfg) - valid)
    if unknown:
        raise ValueError(f"{architecture} config has no fields {unknown}; valid fields: {sorted(valid)}")
    return sae_cls(cfg_cls(d_in=d_in, d_sae=d_sae, device=device, **cfg))


def save_dictionary(sae: TrainingSAE, path: str | Path, metadata: dict | None = None) -> Path:
    """Save the inference version of ``sae`` in SAELens's format, plus ``metadata.json`` (how it was made)."""
    path = Path(path)
    sae.save_inference_model(path)
    info = {"training_architecture": sae.cfg.architecture()} | (metadata or {})
    (path / "metadata.json").write_text(json.dumps(info, indent=1, default=str))
    return path


def load_dictionary(path: str | Path, device: str = "cpu", expected_d_in: int | None = None) -> SAE:
    """Load a saved dictionary with SAELens, with errors that say what is wrong and how to fix it."""
    path = Path(path)
    if not (path / "cfg.json").exists():
        raise FileNotFoundError(f"no dictionary at {path} (missing cfg.json); train one with notebook "
                                "03_sae_and_gated_sae or workbench.dictionaries.training.train_dictionary and save_dictionary")
    try:
        sae = SAE.load_from_disk(str(path), device=device)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a loadable SAELens dictionary: its weights do not match its cfg.json "
                         f"({type(err).__name__}: {str(err)[:300]})") from err
    if expected_d_in is not None and sae.cfg.d_in != expected_d_in:
        raise ValueError(f"dictionary at {path} reads d_in={sae.cfg.d_in} but the hook gives d_in={expected_d_in}; "
                         "load the dictionary trained for this hook and model")
    return sae
