"""Interventions on a model's activations, as context managers: every hook is removed on exit, and every
hook must have fired, or the block raises.

- ``hooked``: any hook functions; ``patched``: set an activation (activation patching); ``added``: add a
  vector (steering); ``replaced``: a function of the activation.
- ``spliced``: a dictionary read at one hook and written at another (the same hook for an SAE;
  ``blocks.{l}.mlp.hook_in`` -> ``blocks.{l}.hook_mlp_out`` for a transcoder), with the error term kept
  and the codes edited by one callback. Feature patching, steering, concept swaps, ablations and the
  replacement model are all edits of codes under a splice.

Why the fired check: TransformerBridge accepts hook names whose hooks never run unless a flag is set
(``hook_mlp_in`` needs ``set_use_hook_mlp_in(True)``), and a forward pass cut short by ``stop_at_layer``
skips later hooks. A patch that silently does nothing is the worst failure an interpretability tool can
have, so each context checks, on exit, that each of its hooks ran at least once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from workbench.hooks import check_hook_name

HookFn = Callable[[Tensor, object], Tensor | None]
Positions = int | Sequence[int] | slice | Bool[Tensor, "batch pos"] | None
"""Where an intervention applies along the position axis: an index, indices, a slice, a ``[batch, pos]``
mask, or None for every position."""


class HookNeverFiredError(RuntimeError):
    """An intervention's hook did not run inside its ``with`` block (the intervention did nothing)."""


@contextlib.contextmanager
def hooked(model: torch.nn.Module, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[torch.nn.Module]:
    """Add forward hooks for the duration of a ``with`` block; they are removed even on error.

    On a normal exit, raises :class:`HookNeverFiredError` naming every hook that never ran.
    """
    fired: set[str] = set()

    def recording(name: str, fn: HookFn) -> HookFn:
        def hook(act: Tensor, hook) -> Tensor | None:
            fired.add(name)
            return fn(act, hook)
        return hook

    resolved = [(check_hook_name(model, name), recording(name, fn)) for name, fn in fwd_hooks]
    with model.hooks(fwd_hooks=resolved):
        yield model
    silent = sorted({name for name, _ in fwd_hooks} - fired)
    if silent:
        raise HookNeverFiredError(
            f"hook(s) {silent} never fired inside this `with` block, so the intervention did nothing. Causes: no "
            "forward pass ran in the block; the pass stopped earlier (stop_at_layer); or the hook point is off "
            "until a flag is set (TransformerBridge: blocks.{l}.hook_mlp_in needs model.set_use_hook_mlp_in(True); "
            "hook_attn_in, hook_result and hook_q/k/v_input need set_use_attn_in, set_use_attn_result and "
            "set_use_split_qkv_input). blocks.{l}.mlp.hook_in always fires and is the MLP input after LayerNorm.")


def position_axis(hook_name: str) -> int:
    """The axis of an activation that indexes (query) positions: 2 for attention patterns and scores
    ``[batch head query key]``, else 1 (``[batch pos ...]``)."""
    return 2 if hook_name.endswith(("hook_pattern", "hook_attn_scores")) else 1


def _position_mask(act: Tensor, axis: int, positions: Positions) -> Tensor:
    """A bool mask broadcastable to ``act``, true at the selected positions along ``axis``."""
    batch, n_pos = act.shape[0], act.shape[axis]
    if isinstance(positions, Tensor) and positions.dtype == torch.bool:
        if tuple(positions.shape) != (batch, n_pos):
            raise ValueError(f"position mask has shape {tuple(positions.shape)} but the activation has "
                             f"[batch, pos] = [{batch}, {n_pos}]")
        mask = positions.to(act.device)
    else:
        selected = torch.zeros(n_pos, dtype=torch.bool, device=act.device)
        selected[_index(positions)] = True
        mask = selected.expand(batch, n_pos)
    shape = [batch] + [1] * (act.dim() - 1)
    shape[axis] = n_pos
    return mask.reshape(shape)


def _index(positions: Positions) -> slice | list[int] | int:
    if positions is None:
        return slice(None)
    return positions if isinstance(positions, (int, slice)) else list(positions)


def _apply_at(act: Tensor, new: Tensor, axis: int, positions: Positions, hook_name: str) -> Tensor:
    """``act`` with ``new`` at the selected positions. ``new`` is either shaped like ``act`` (then its
    values at those positions are used) or broadcastable to the selected slice (e.g. a ``[d]`` vector)."""
    new = new.to(act.device, act.dtype)
    if new.shape == act.shape or positions is None or isinstance(positions, Tensor):
        try:
            new = new.expand_as(act)
        except RuntimeError as err:
            raise ValueError(f"value of shape {tuple(new.shape)} does not broadcast to the activation "
                             f"{tuple(act.shape)} at {hook_name}") from err
        return torch.where(_position_mask(act, axis, positions), new, act)
    idx = (slice(None),) * axis + (_index(positions),)
    out = act.clone()
    try:
        out[idx] = new.expand_as(out[idx])
    except RuntimeError as err:
        raise ValueError(f"value of shape {tuple(new.shape)} does not fit the activation slice "
                         f"{tuple(out[idx].shape)} at {hook_name} (positions {positions!r} on axis {axis})") from err
    return out


def patched(model: torch.nn.Module, hook_name: str, value: Tensor, positions: Positions = None):
    """Replace the activation at ``hook_name`` by ``value`` at ``positions`` (default all).

    ``value`` is either a whole activation of the same shape (e.g. the counterfactual run's, for activation
    patching: its values at ``positions`` are used) or broadcasts to the patched slice. Positions index the
    query axis of attention patterns, the position axis elsewhere.
    """
    axis = position_axis(hook_name)

    def hook(act: Tensor, hook) -> Tensor:
        return _apply_at(act, value, axis, positions, hook_name)

    return hooked(model, [(hook_name, hook)])


def added(model: torch.nn.Module, hook_name: str, vector: Float[Tensor, " d"], scale: float = 1.0,
          positions: Positions = None):
    """Add ``scale * vector`` to the activation at ``hook_name`` (steering), at ``positions`` (default all)."""
    axis = position_axis(hook_name)

    def hook(act: Tensor, hook) -> Tensor:
        if vector.shape[-1] != act.shape[-1]:
            raise ValueError(f"steering vector has d={vector.shape[-1]} but {hook_name} has d={act.shape[-1]}")
        return _apply_at(act, act + scale * vector.to(act.device, act.dtype), axis, positions, hook_name)

    return hooked(model, [(hook_name, hook)])


def replaced(model: torch.nn.Module, hook_name: str, fn: Callable[[Tensor], Tensor]):
    """Replace the activation at ``hook_name`` by ``fn(activation)`` (same shape)."""

    def hook(act: Tensor, hook) -> Tensor:
        new = fn(act)
        if new.shape != act.shape:
            raise ValueError(f"replacement for {hook_name} has shape {tuple(new.shape)}, expected {tuple(act.shape)}")
        return new

    return hooked(model, [(hook_name, hook)])


@runtime_checkable
class Dictionary(Protocol):
    """What a splice needs: SAELens SAEs and transcoders, and the PCA / ICA / random baselines."""

    W_dec: Tensor

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, codes: Tensor) -> Tensor: ...


CodesEdit = Callable[[Float[Tensor, "batch pos d_sae"]], Float[Tensor, "batch pos d_sae"]]


@dataclass(eq=False)
class Splice:
    """A dictionary read at ``hook_in`` and written at ``hook_out`` (default: the same hook).

    At ``hook_out`` the activation becomes ``decode(edit(codes)) + error``, where ``codes = encode(read)``
    and ``error = write - decode(codes)`` is computed from the *unedited* codes and detached (as SAELens
    does since 6.34.2): with no edit the run is unchanged, and an edit changes the run by exactly the
    decoded difference. ``use_error_term=False`` writes the reconstruction alone (the dictionary replaces
    the activation). After a forward pass, ``codes`` holds the unedited codes ``[batch pos d_sae]``.
    """

    dictionary: Dictionary
    """Anything with ``encode``/``decode`` (SAELens SAE or Transcoder, a baseline)."""
    hook_in: str
    """Where the dictionary reads (e.g. ``blocks.3.hook_resid_pre``, ``blocks.3.mlp.hook_in``)."""
    hook_out: str | None = None
    """Where it writes (``blocks.3.hook_mlp_out`` for a transcoder); None: ``hook_in``."""
    edit: CodesEdit | None = None
    """Codes in, codes out: where feature patching, steering, swaps and ablations happen."""
    use_error_term: bool = True
    """Keep what the dictionary fails to reconstruct (the run is exact without an edit)."""
    positions: Positions = None
    """Positions the splice writes (others keep the model's activation): e.g. a non-BOS mask."""
    codes: Tensor | None = field(default=None, init=False)
    """The unedited codes of the latest forward pass (detached)."""

    @property
    def write_hook(self) -> str:
        return self.hook_out or self.hook_in

    def _encode(self, x: Tensor) -> Tensor:
        param = self.dictionary.W_dec
        d_in = getattr(self.dictionary, "W_enc", param.T).shape[0]
        if x.shape[-1] != d_in:
            raise ValueError(f"the dictionary reads width {d_in} but {self.hook_in} has width {x.shape[-1]}: is it "
                             "the dictionary for this hook and model?")
        codes = self.dictionary.encode(x.to(param.device, param.dtype))
        self.codes = codes.detach()
        return codes

    def _write(self, act: Tensor, codes: Tensor) -> Tensor:
        recon = self.dictionary.decode(codes)
        if recon.shape[-1] != act.shape[-1]:
            raise ValueError(f"the dictionary decodes to width {recon.shape[-1]} but {self.write_hook} has width "
                             f"{act.shape[-1]}: is it the dictionary for this hook and model?")
        out = recon
        if self.edit is not None:
            edited = self.edit(codes.clone())
            if edited.shape != codes.shape:
                raise ValueError(f"edit returned codes of shape {tuple(edited.shape)}, expected {tuple(codes.shape)}")
            out = self.dictionary.decode(edited)
        if self.use_error_term:
            out = out + (act.to(recon.dtype) - recon).detach()
        return _apply_at(act, out.to(act.dtype), position_axis(self.write_hook), self.positions, self.write_hook)

    def fwd_hooks(self) -> list[tuple[str, HookFn]]:
        """The (hook name, function) pairs that carry out this splice."""
        if self.hook_out is None or self.hook_out == self.hook_in:
            return [(self.hook_in, lambda act, hook: self._write(act, self._encode(act)))]
        pending: list[Tensor] = []

        def read(act: Tensor, hook) -> None:
            pending[:] = [self._encode(act)]

        def write(act: Tensor, hook) -> Tensor:
            if not pending:
                raise RuntimeError(f"{self.hook_out} ran before {self.hook_in} in this forward pass: a splice must "
                                   "read at a hook that runs before the one it writes")
            return self._write(act, pending.pop())

        return [(self.hook_in, read), (self.hook_out, write)]


def spliced(model: torch.nn.Module, *splices: Splice):
    """Apply one or more splices for the duration of a ``with`` block (a transcoder per layer = the
    replacement model). Widths are checked against the model's hooks when the hooks run."""
    if not splices:
        raise ValueError("spliced() needs at least one Splice")
    return hooked(model, [pair for s in splices for pair in s.fwd_hooks()])


def zero_features(features: Sequence[int], positions: Positions = None) -> CodesEdit:
    """An edit that ablates ``features`` (sets their codes to 0) at ``positions`` (default all)."""
    index = list(features)

    def edit(codes: Tensor) -> Tensor:
        mask = _position_mask(codes, 1, positions)
        codes[..., index] = torch.where(mask, 0.0, codes[..., index])
        return codes

    return edit
