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

import torch
from sae_lens import SAE
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class
from sae_lens.saes.sae import TrainingSAE

from workbench.dictionaries import (  # noqa: F401  (register our architectures)
    alignsae,
    gated_paper,
    sparse_relu,
    sparse_topk,
    tied,
    transcoder,
)
from workbench.hooks import check_hook_name
from workbench.models import default_device, model_name_of


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


def save_dictionary(sae: TrainingSAE, path: str | Path, *, hook_name: str, model: torch.nn.Module | str,
                    hook_name_out: str | None = None, metadata: dict | None = None) -> Path:
    """Save the inference version of ``sae`` in SAELens's format, plus ``metadata.json`` (how it was made).

    ``cfg.json`` carries what SAELens needs to splice the file as it is (``metadata.hook_name``, and
    ``hook_name_out`` for a transcoder; ``model_name``, ``context_size``, ``prepend_bos``), so that
    ``SAE.load_from_disk`` then ``SAETransformerBridge.run_with_saes(tokens, saes=[sae])`` works with no edits.
    ``model`` is the model it was trained on (a TransformerBridge, or its ``load_model`` name).
    """
    path = Path(path)
    meta = sae.cfg.metadata
    meta.hook_name = hook_name
    if hook_name_out is not None and hook_name_out != hook_name:
        meta.hook_name_out = hook_name_out
    meta.model_name = model if isinstance(model, str) else model_name_of(model)
    if not isinstance(model, str):
        meta.context_size = int(model.cfg.n_ctx)
    meta.prepend_bos = True
    sae.save_inference_model(path)
    from workbench.versions import package_versions

    info = {"training_architecture": sae.cfg.architecture(), "hook": hook_name, "hook_out": hook_name_out or hook_name,
            "model_name": meta.model_name} | (metadata or {}) | {"versions": package_versions()}
    (path / "metadata.json").write_text(json.dumps(info, indent=1, default=str))
    return path


def load_dictionary(path: str | Path, model: torch.nn.Module | None = None, device: str | torch.device | None = None,
                    expected_d_in: int | None = None) -> SAE:
    """Load a saved dictionary with SAELens, with errors that say what is wrong and how to fix it.

    With ``model``, the dictionary goes on the model's device and is checked against it: it must have been
    trained on that model (``cfg.metadata.model_name``) and its widths must match the activations at its
    hooks (``hook_name``, and ``hook_name_out`` for a transcoder).
    """
    path = Path(path)
    if not (path / "cfg.json").exists():
        raise FileNotFoundError(f"no dictionary at {path} (missing cfg.json); train one with notebook "
                                "03_sae_and_gated_sae or workbench.dictionaries.training.train_dictionary and save_dictionary")
    if device is None:
        device = next(model.parameters()).device if model is not None else default_device()
    try:
        sae = SAE.load_from_disk(str(path), device=str(device))
    except (RuntimeError, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a loadable SAELens dictionary: its weights do not match its cfg.json "
                         f"({type(err).__name__}: {str(err)[:300]})") from err
    if expected_d_in is not None and sae.cfg.d_in != expected_d_in:
        raise ValueError(f"dictionary at {path} reads d_in={sae.cfg.d_in} but the hook gives d_in={expected_d_in}; "
                         "load the dictionary trained for this hook and model")
    if model is not None:
        _check_fits(sae, model, path)
    return sae


def _check_fits(sae: SAE, model: torch.nn.Module, path: Path) -> None:
    meta = sae.cfg.metadata
    if not meta.hook_name:
        raise ValueError(f"{path}/cfg.json names no hook (metadata.hook_name); re-save it with "
                         "save_dictionary(sae, path, hook_name=..., model=...)")
    trained_on, given = meta.model_name, model_name_of(model)
    if trained_on and trained_on != given:
        raise ValueError(f"dictionary at {path} was trained on model {trained_on!r}, but this model is {given!r}; "
                         "load a dictionary trained on this model (or retrain it: notebook 03)")
    hook_out = meta.hook_name_out or meta.hook_name
    for name in {meta.hook_name, hook_out}:
        check_hook_name(model, name)
    bos = torch.tensor([[model.tokenizer.bos_token_id]], device=next(model.parameters()).device)
    with torch.no_grad():
        _, cache = model.run_with_cache(bos, names_filter=[meta.hook_name, hook_out])
    widths = {"reads": (meta.hook_name, sae.cfg.d_in), "writes": (hook_out, sae.W_dec.shape[1])}
    for verb, (name, width) in widths.items():
        if cache[name].shape[-1] != width:
            raise ValueError(f"dictionary at {path} {verb} width {width} but {name} of model {given!r} has width "
                             f"{cache[name].shape[-1]}: it belongs to another model or hook")
