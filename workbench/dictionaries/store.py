"""A sharded on-disk activation store: cache once (on one process or under ``torchrun``), train from disk.

:func:`cache_to_shards` runs the model over token sequences and writes the activations at one or more hooks
(BOS positions left out, exactly the rows :func:`workbench.hooks.cache_activations` gives, in the same order)
as safetensors shards of at most ``shard_size`` rows, plus ``manifest.json``::

    out_dir/
        manifest.json                     # format, model, hooks and widths, dtype, rows, shards
        rank00000-shard00000.safetensors  # one tensor per hook [rows, d], and token_ids, sequence_index,
        rank00000-shard00001.safetensors  #   positions [rows] saying where each row came from
        rank00001-shard00000.safetensors

Under an initialised ``torch.distributed`` process group each rank caches a contiguous block of the
sequences (rank ``r`` of ``W`` takes ``[r n / W, (r + 1) n / W)``) and writes its own shards; the shard lists are
gathered and rank 0 writes the manifest. Shards listed in rank order are the single-process cache, row for row.
``out_dir`` must be one folder every rank sees (a shared filesystem across nodes).

:class:`ShardedSource` is an :class:`~workbench.dictionaries.training.ActivationSource` over a store: shards are
memory-mapped (numpy memmaps at the tensors' offsets in the safetensors files, so a batch reads only its rows),
and the order of rows is the one :class:`~workbench.dictionaries.training.TensorSource` uses for the same seed,
so training from a store equals training from the same rows in memory.

SAELens: :func:`to_sae_lens_dataset` converts a store to the cached-activations format of SAELens 6.54
(``CacheActivationsRunner`` writes it, ``ActivationsStore`` reads it through ``cached_activations_path``): a
Hugging Face ``datasets.Dataset`` saved with ``save_to_disk``, one row per sequence, a column named after the hook
of feature ``Array2D(shape=(context_size, d_in), dtype="float32")`` and a ``token_ids`` column of
``Sequence(Value("int32"), length=context_size)``. SAELens needs the same number of rows per sequence: true when
every sequence has the same length and BOS only at position 0 (``context_size`` is then ``pos - 1``; set SAELens's
``context_size`` to it and train with ``cached_activations_path=out_dir``).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from jaxtyping import Int
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from workbench import hooks
from workbench.dictionaries.distributed import Ranks
from workbench.dictionaries.training import ActivationBatch, BatchOrder

MANIFEST = "manifest.json"
FORMAT = "workbench-activation-store"
VERSION = 1
_INDEX_KEYS = ("token_ids", "sequence_index", "positions")
_DTYPES = {"F32": (np.float32, torch.float32), "F16": (np.float16, torch.float16),
           "BF16": (np.uint16, torch.bfloat16), "I64": (np.int64, torch.int64), "I32": (np.int32, torch.int32)}


def _model_name(model: torch.nn.Module) -> str:
    try:
        from workbench.models import model_name_of
        return model_name_of(model)
    except Exception:  # a model without cfg.model_name (tests' stand-ins)
        return str(getattr(getattr(model, "cfg", None), "model_name", type(model).__name__))


@torch.no_grad()
def cache_to_shards(model: torch.nn.Module, tokens: Int[Tensor, "n pos"], hook_names: Sequence[str],
                    out_dir: str | Path, shard_size: int = 65_536, batch_size: int = 32, exclude_bos: bool = True,
                    dtype: torch.dtype = torch.float32, progress: bool = True) -> dict:
    """Cache the activations of ``tokens`` at ``hook_names`` into shards of at most ``shard_size`` rows in
    ``out_dir`` (created; refused when it already holds a manifest) and return the manifest.

    Rows are those of :func:`workbench.hooks.cache_activations` (which computes them, ``batch_size``
    sequences at a time), stored as ``dtype`` (float32, float16 or bfloat16). Under a process group each
    rank caches its contiguous block of sequences; every rank returns the same manifest.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 rows, got {shard_size}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [n_sequences, pos], got shape {tuple(tokens.shape)}")
    hook_names = list(hook_names)
    if not hook_names or len(set(hook_names)) != len(hook_names) or set(hook_names) & set(_INDEX_KEYS):
        raise ValueError(f"hook_names must be distinct hook names, got {hook_names}")
    for name in hook_names:
        hooks.check_hook_name(model, name)
    out = Path(out_dir)
    ranks = Ranks.current()
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{out} already holds an activation store ({MANIFEST}); use an empty folder")
    out.mkdir(parents=True, exist_ok=True)

    n_seq = len(tokens)
    lo, hi = ranks.rank * n_seq // ranks.world_size, (ranks.rank + 1) * n_seq // ranks.world_size
    shards: list[dict] = []
    buffer: dict[str, list[Tensor]] = {k: [] for k in [*hook_names, *_INDEX_KEYS]}
    buffered = 0

    def flush(final: bool) -> None:
        nonlocal buffered
        while buffered >= shard_size or (final and buffered):
            joined = {k: torch.cat(v) for k, v in buffer.items()}
            n = min(shard_size, buffered)
            tensors = {k: v[:n].contiguous() for k, v in joined.items()}
            name = f"rank{ranks.rank:05d}-shard{len(shards):05d}.safetensors"
            save_file(tensors, str(out / name), metadata={"format": FORMAT})
            shards.append({"file": name, "rank": ranks.rank, "n_rows": n,
                           "shapes": {h: list(tensors[h].shape) for h in hook_names}})
            for k, v in joined.items():
                buffer[k] = [v[n:]]
            buffered -= n

    steps = range(lo, hi, batch_size)
    for start in tqdm(steps, disable=not (progress and ranks.is_main), desc="caching to shards"):
        chunk = tokens[start:min(start + batch_size, hi)]
        cached = hooks.cache_activations(model, chunk, hook_names, batch_size=batch_size, exclude_bos=exclude_bos,
                                         progress=False)
        for h in hook_names:
            buffer[h].append(cached[h].to(dtype))
        buffer["token_ids"].append(cached.token_ids.to(torch.int64))
        buffer["sequence_index"].append(cached.sequence_index.to(torch.int64) + start)
        buffer["positions"].append(cached.positions.to(torch.int64))
        buffered += len(cached)
        flush(final=False)
    flush(final=True)

    widths = {h: shards[0]["shapes"][h][1] for h in hook_names} if shards else {}
    mine = {"shards": shards, "widths": widths}
    if ranks.parallel:
        gathered: list = [None] * ranks.world_size
        dist.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    widths = next((g["widths"] for g in gathered if g["widths"]), {})
    all_shards, row = [], 0
    for g in gathered:
        for s in g["shards"]:
            all_shards.append({**s, "first_row": row})
            row += s["n_rows"]
    manifest = {
        "format": FORMAT, "version": VERSION, "model": _model_name(model), "hooks": hook_names,
        "d": widths, "dtype": str(dtype).removeprefix("torch."), "n_rows": row,
        "n_sequences": n_seq, "context_size": int(tokens.shape[1]), "n_tokens": int(tokens.numel()),
        "exclude_bos": exclude_bos, "world_size": ranks.world_size, "shards": all_shards,
    }
    if ranks.is_main:
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(out / MANIFEST)
    if ranks.parallel:
        dist.barrier()  # no rank returns before the manifest exists
    return manifest


def load_manifest(store_dir: str | Path) -> dict:
    path = Path(store_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{store_dir} holds no activation store: {MANIFEST} is missing "
                                "(write one with cache_to_shards)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{path} is not a {FORMAT} v{VERSION} manifest: format {manifest.get('format')!r} "
                         f"version {manifest.get('version')!r}")
    return manifest


def _memmap_safetensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file as a read-only memory-mapped tensor (nothing is read until indexed)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        np_dtype, torch_dtype = _DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == begin:
            out[name] = torch.empty(shape, dtype=torch_dtype)
            continue
        arr = np.memmap(path, dtype=np_dtype, mode="r", offset=8 + header_len + begin, shape=shape)
        t = torch.from_numpy(arr)  # read-only memmap: torch warns on non-writable arrays, harmless here
        out[name] = t.view(torch_dtype) if torch_dtype == torch.bfloat16 else t
    return out


class ActivationStore:
    """Random access to a store's rows across its shards (memory-mapped)."""

    def __init__(self, store_dir: str | Path) -> None:
        self.dir = Path(store_dir)
        self.manifest = load_manifest(self.dir)
        self.n_rows = int(self.manifest["n_rows"])
        self.hooks = list(self.manifest["hooks"])
        self._shards = [_memmap_safetensors_quiet(self.dir / s["file"]) for s in self.manifest["shards"]]
        self._starts = torch.tensor([s["first_row"] for s in self.manifest["shards"]] + [self.n_rows])

    def width(self, key: str) -> int:
        self._check(key)
        return int(self.manifest["d"][key])

    def _check(self, key: str) -> None:
        if key not in self.hooks and key not in _INDEX_KEYS:
            raise KeyError(f"{key!r} is not in the store at {self.dir}; it holds {self.hooks} "
                           f"(and {list(_INDEX_KEYS)})")

    def gather(self, key: str, idx: Tensor) -> Tensor:
        """Rows ``idx`` (any order, global row numbers) of ``key``: a hook's ``[len(idx), d]`` or an index's."""
        self._check(key)
        idx = idx.to(torch.long)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise IndexError(f"row indices must be in [0, {self.n_rows}), got [{idx.min()}, {idx.max()}]")
        shard = torch.searchsorted(self._starts, idx, right=True) - 1
        order = torch.argsort(shard * self.n_rows + idx)  # by shard, then row: sequential reads
        sorted_idx, sorted_shard = idx[order], shard[order]
        parts = []
        for s in torch.unique_consecutive(sorted_shard).tolist():
            local = (sorted_idx[sorted_shard == s] - self._starts[s]).numpy()
            parts.append(self._shards[s][key][local])  # numpy fancy indexing on the memmap: only these rows
        rows = torch.cat(parts) if parts else self._empty(key)
        out = torch.empty_like(rows)
        out[order] = rows
        return out

    def rows(self, key: str, start: int, stop: int) -> Tensor:
        """Rows ``[start, stop)`` of ``key``, in order."""
        return self.gather(key, torch.arange(start, stop))

    def _empty(self, key: str) -> Tensor:
        ref = self._shards[0][key] if self._shards else torch.empty(0)
        return torch.empty((0, *ref.shape[1:]), dtype=ref.dtype)


def _memmap_safetensors_quiet(path: Path) -> dict[str, Tensor]:
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return _memmap_safetensors(path)


class ShardedSource:
    """Training batches from an on-disk store (an :class:`~workbench.dictionaries.training.ActivationSource`).

    Rows are drawn without replacement and reshuffled each epoch in exactly :class:`TensorSource`'s order for
    the same seed (``TensorSource(acts, seed=s)`` over the store's rows in order gives the same batches), so a
    run from disk equals a run from memory and resumes exactly. ``target_hook`` gives each row's target (a
    transcoder's MLP output, cached in the same store)."""

    def __init__(self, store_dir: str | Path, hook: str, target_hook: str | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        self.store = ActivationStore(store_dir)
        if hook not in self.store.hooks or (target_hook is not None and target_hook not in self.store.hooks):
            missing = hook if hook not in self.store.hooks else target_hook
            raise KeyError(f"{missing!r} was not cached in {store_dir}; cached hooks: {self.store.hooks}")
        self.hook, self.target_hook, self.seed = hook, target_hook, seed
        self.device = None if device is None else torch.device(device)
        self.n = self.store.n_rows
        self.d_in = self.store.width(hook)
        self.d_out = None if target_hook is None else self.store.width(target_hook)
        self.order = BatchOrder(self.n, seed, what="activations in the store")  # TensorSource's order

    def batch(self, step: int, batch_size: int) -> ActivationBatch:
        return self.shard(step, batch_size, 0, 1)

    def shard(self, step: int, batch_size: int, rank: int, world_size: int) -> ActivationBatch:
        """Rows ``[rank * n, (rank + 1) * n)``, ``n = batch_size / world_size``, of the batch of ``step`` (only
        those rows are read from disk)."""
        idx = self.order.rows(step, batch_size, rank, world_size)
        inputs = self.store.gather(self.hook, idx).float()
        targets = None if self.target_hook is None else self.store.gather(self.target_hook, idx).float()
        return ActivationBatch(inputs, targets).to(self.device or "cpu")


def to_sae_lens_dataset(store_dir: str | Path, out_dir: str | Path, hook: str | None = None,
                        sequences_per_chunk: int = 256):
    """Write the store's activations at ``hook`` (default: its only hook) in SAELens 6.54's cached-activations
    format (see the module docstring) to ``out_dir`` and return the ``datasets.Dataset``; SAELens trains from it
    with ``cached_activations_path=out_dir``, ``hook_name=hook`` and ``context_size`` = the returned dataset's
    ``features[hook].shape[0]``. Raises when sequences have different numbers of rows (SAELens needs a fixed
    ``context_size``)."""
    import tempfile

    from datasets import Array2D, Dataset, Features, Value
    from datasets import Sequence as HFSequence

    store = ActivationStore(store_dir)
    hook = hook or (store.hooks[0] if len(store.hooks) == 1 else None)
    if hook is None:
        raise ValueError(f"the store holds several hooks {store.hooks}; pass hook=... (SAELens reads one)")
    store._check(hook)
    seq = store.rows("sequence_index", 0, store.n_rows)
    n_seq = len(torch.unique_consecutive(seq))
    if store.n_rows % max(n_seq, 1) or not torch.equal(
            seq, torch.unique_consecutive(seq).repeat_interleave(store.n_rows // max(n_seq, 1))):
        counts = torch.unique_consecutive(seq, return_counts=True)[1]
        raise ValueError(f"SAELens's format needs the same number of rows per sequence; this store has "
                         f"{counts.min()}..{counts.max()} (BOS tokens inside sequences, or padding). Cache "
                         "sequences of one length with BOS only at position 0")
    ctx, d = store.n_rows // n_seq, store.width(hook)
    features = Features({hook: Array2D(shape=(ctx, d), dtype="float32"),
                         "token_ids": HFSequence(Value(dtype="int32"), length=ctx)})

    def rows():
        for s in range(0, n_seq, sequences_per_chunk):
            e = min(s + sequences_per_chunk, n_seq)
            acts = store.rows(hook, s * ctx, e * ctx).float().reshape(e - s, ctx, d).numpy()
            toks = store.rows("token_ids", s * ctx, e * ctx).to(torch.int32).reshape(e - s, ctx).numpy()
            for a, t in zip(acts, toks, strict=True):
                yield {hook: a, "token_ids": t}

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; SAELens's cache folder must be new or empty")
    with tempfile.TemporaryDirectory(prefix="sae-lens-cache-") as tmp:
        dataset = Dataset.from_generator(rows, features=features, cache_dir=tmp)
        dataset.save_to_disk(str(out), num_shards=max(1, math.ceil(n_seq / 4096)))
        del dataset
    return Dataset.load_from_disk(str(out))
