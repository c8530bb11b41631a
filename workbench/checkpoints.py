"""Resumable training checkpoints without pickle: weights and optimiser moments as safetensors, the rest JSON.

Shared by the LM trainer and the dictionary trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "checkpoint.safetensors"
STATE = "state.json"


def has_checkpoint(path: Path) -> bool:
    return (Path(path) / WEIGHTS).exists() and (Path(path) / STATE).exists()


def save_checkpoint(path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Write ``module``'s weights, ``opt``'s per-parameter state and ``state`` (JSON) atomically enough to resume."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in module.state_dict().items():
        if v.data_ptr() in seen:  # tied weights: safetensors stores each storage once
            continue
        seen.add(v.data_ptr())
        tensors[f"module.{k}"] = v.detach().contiguous()
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{k}"] = v.detach().reshape(-1) if v.dim() == 0 else v.detach().contiguous()
    save_file(tensors, str(path / (WEIGHTS + ".tmp")))
    (path / (WEIGHTS + ".tmp")).replace(path / WEIGHTS)
    (path / STATE).write_text(json.dumps(state))


def load_checkpoint(path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore what :func:`save_checkpoint` wrote into ``module`` and ``opt``; returns the JSON state."""
    path = Path(path)
    if not has_checkpoint(path):
        raise FileNotFoundError(f"no checkpoint in {path} (expected {WEIGHTS} and {STATE})")
    tensors = load_file(str(path / WEIGHTS))
    weights = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
    missing = set(module.state_dict()) - set(weights)
    module.load_state_dict(weights, strict=False)
    for name in missing:  # tied weights share storage with a saved tensor
        if not any(module.state_dict()[name].data_ptr() == module.state_dict()[w].data_ptr() for w in weights):
            raise ValueError(f"checkpoint in {path} lacks {name}; it was written by another kind of model")
    # through load_state_dict, which puts each state tensor where its optimiser expects it (moments on the
    # parameter's device; ``step`` on the CPU, or on the device for fused and capturable optimisers)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v.reshape(()) if name == "step" else v
    opt.load_state_dict(opt.state_dict() | {"state": opt_state})
    return json.loads((path / STATE).read_text())
