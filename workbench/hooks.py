"""Hook names and activation caching with bounded memory (interventions live in ``workbench.interventions``).

Names are TransformerBridge's (GPT-2 layout): ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.mlp.hook_in``
(the MLP input after LayerNorm: what a transcoder reads), ``blocks.{l}.hook_mlp_out``... Hooks are
global state on the model, so they are only ever added inside a context manager that removes them.

The same names hold on every family TransformerBridge adapts (checked on GPT-2, GPT-NeoX/Pythia and Llama in
``tests/test_model_families.py``), with two differences: a model with attention and MLP in parallel (GPT-NeoX,
Pythia) has no ``hook_resid_mid``, and on a gated MLP (Llama) ``mlp.hook_pre`` is the gate's pre-activation while
``mlp.hook_post`` is ``act(gate) * up``, the input of the down projection (the neuron basis either way).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm


def resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    """Between attention and MLP; absent on models that run them in parallel (GPT-NeoX, Pythia)."""
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def mlp_in(layer: int) -> str:
    """The MLP's input after LayerNorm (what a transcoder reads)."""
    return f"blocks.{layer}.mlp.hook_in"


def mlp_pre(layer: int) -> str:
    """MLP neurons before the nonlinearity (on a gated MLP such as Llama's: the gate's pre-activation)."""
    return f"blocks.{layer}.mlp.hook_pre"


def mlp_post(layer: int) -> str:
    """MLP neurons after the nonlinearity (the neuron basis; on a gated MLP ``act(gate) * up``), the input of
    the MLP's output projection."""
    return f"blocks.{layer}.mlp.hook_post"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def attn_out(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_out"


def attn_pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def z(layer: int) -> str:
    """Per-head attention outputs before W_O: ``[batch pos head d_head]``."""
    return f"blocks.{layer}.attn.hook_z"


def check_hook_name(model: torch.nn.Module, name: str) -> str:
    """The model's name for hook point ``name`` (itself, or the canonical name a bridge resolves an alias to,
    e.g. ``blocks.3.hook_resid_pre`` -> ``blocks.3.hook_in`` on SAELens's bridge); raise listing the closest
    valid names when it has none."""
    if name in model.hook_dict:
        return name
    resolve = getattr(model, "_resolve_hook_name", None)  # SAELens's SAETransformerBridge lists canonical names only
    if resolve is not None and resolve(name) in model.hook_dict:
        return resolve(name)
    if name.endswith("hook_resid_mid") and getattr(getattr(model, "cfg", None), "parallel_attn_mlp", False):
        raise ValueError(
            f"{name!r} does not exist on this model: it runs attention and MLP in parallel on the same input "
            "(GPT-NeoX / Pythia), so there is no residual stream between them. Use resid_pre(layer) (what both "
            "read), mlp_in(layer) (the MLP input after LayerNorm) or resid_post(layer).")
    names = list(model.hook_dict)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    raise ValueError(
        f"unknown hook name {name!r}. Closest valid names: {close or names[:5]}. "
        f"Use the helpers in workbench.hooks (resid_pre(layer), mlp_in(layer), ...); this model has "
        f"{len(names)} hook points, e.g. blocks.0.hook_resid_pre.")


@dataclass
class CachedActivations:
    """Activations at each hook, flattened over (sequence, position): ``acts[name]`` is ``[n_tokens, d]``.

    ``token_ids``, ``sequence_index`` and ``positions`` say where each row came from. Large caches are
    numpy memmaps on disk (wrapped as tensors without copying), so memory stays bounded.
    """

    acts: dict[str, Float[Tensor, "n_tokens d"]]
    token_ids: Int[Tensor, " n_tokens"]
    sequence_index: Int[Tensor, " n_tokens"]
    positions: Int[Tensor, " n_tokens"]

    def __getitem__(self, name: str) -> Float[Tensor, "n_tokens d"]:
        if name not in self.acts:
            raise KeyError(f"{name!r} was not cached; cached hooks: {sorted(self.acts)}")
        return self.acts[name]

    def __len__(self) -> int:
        return len(self.token_ids)


def _last_layer_needed(model: torch.nn.Module, hook_names: Sequence[str]) -> int | None:
    """``stop_at_layer`` that still runs every hook in ``hook_names`` (None: run the whole model)."""
    layers = [int(n.split(".")[1]) if n.startswith("blocks.") else None for n in hook_names]
    if None in layers:
        return None
    stop = max(layers) + 1
    return stop if stop < model.cfg.n_layers else None


@torch.no_grad()
def cache_activations(model: torch.nn.Module, tokens: Int[Tensor, "n pos"], hook_names: Sequence[str],
                      batch_size: int = 32, exclude_bos: bool = True, store_dir: str | Path | None = None,
                      max_memory_mb: float = 2048, progress: bool = True) -> CachedActivations:
    """Run ``tokens`` through ``model`` in batches and keep the activations at ``hook_names``.

    Activations of shape ``[batch pos ...]`` are flattened to ``[n_tokens, d]`` (heads are flattened
    into ``d``). When the cache would exceed ``max_memory_mb`` it is written to ``store_dir`` as
    memory-mapped ``.npy`` files (an error says so when ``store_dir`` is not given).
    """
    for name in hook_names:
        check_hook_name(model, name)
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [n_sequences, pos], got shape {tuple(tokens.shape)}")
    device = next(model.parameters()).device
    keep = torch.ones_like(tokens, dtype=torch.bool)
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    if exclude_bos and bos is not None:
        keep &= tokens != bos
    n_tokens = int(keep.sum())
    stop = _last_layer_needed(model, hook_names)

    outputs: dict[str, np.ndarray | Tensor] = {}
    row = 0
    for start in tqdm(range(0, len(tokens), batch_size), disable=not progress, desc="caching"):
        batch = tokens[start:start + batch_size]
        mask = keep[start:start + batch_size]
        _, cache = model.run_with_cache(batch.to(device), names_filter=list(hook_names), stop_at_layer=stop)
        m = int(mask.sum())
        for name in hook_names:
            act = cache[name].float().cpu()
            flat = act.reshape(act.shape[0], act.shape[1], -1)[mask]
            if name not in outputs:
                outputs[name] = _allocate(name, (n_tokens, flat.shape[-1]), store_dir, max_memory_mb, len(hook_names))
            out = outputs[name]
            out[row:row + m] = flat.numpy() if isinstance(out, np.ndarray) else flat
        row += m
    acts = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in outputs.items()}
    seq_idx = torch.arange(len(tokens))[:, None].expand_as(tokens)[keep]
    pos = torch.arange(tokens.shape[1])[None, :].expand_as(tokens)[keep]
    return CachedActivations(acts, tokens[keep], seq_idx, pos)


def _allocate(name: str, shape: tuple[int, int], store_dir, max_memory_mb: float, n_hooks: int):
    size_mb = math.prod(shape) * 4 / 2**20
    if size_mb * n_hooks <= max_memory_mb:
        return torch.empty(shape, dtype=torch.float32)
    if store_dir is None:
        raise ValueError(
            f"caching {name} needs {size_mb:.1f} MB per hook x {n_hooks} hooks, over max_memory_mb={max_memory_mb}; "
            "pass store_dir=... to stream to memory-mapped files on disk, or cache fewer tokens")
    path = Path(store_dir)
    path.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path / f"{name}.npy", mode="w+", dtype=np.float32, shape=shape)
