"""One dictionary training run described by a JSON file: ``workbench train-dictionary CONFIG.json``.

The same file trains on one process or under ``torchrun --nproc_per_node N`` (see :mod:`.distributed`)::

    {"model": null, "hook": "blocks.2.hook_resid_post", "tokens": "tokens.safetensors",
     "architecture": "standard", "d_sae": 2048, "sae": {"l1_coefficient": 5.0},
     "train": {"n_steps": 2000, "batch_size": 4096}, "output": "dictionaries/resid2"}

The data is exactly one of ``tokens``, a safetensors file holding ``tokens`` ``[n_sequences, pos]`` (activations
are computed from the model a chunk of sequences at a time), or ``store``, an activation store folder written by
:func:`workbench.dictionaries.store.cache_to_shards` (read memory-mapped, each rank only its rows; the model is not
loaded, the dictionary records the store's model). Relative paths are read from the config file's folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from workbench.dictionaries import make_training_sae, save_dictionary
from workbench.dictionaries.distributed import Ranks
from workbench.dictionaries.store import ShardedSource, load_manifest
from workbench.dictionaries.training import (
    ActivationSource,
    DictionaryTrainConfig,
    ModelActivationSource,
    Stage,
    TrainResult,
    train_dictionary,
)


@dataclass(frozen=True)
class DictionaryJob:
    """What ``workbench train-dictionary`` trains, and where it writes."""

    hook: str
    """Hook the dictionary reads, e.g. ``blocks.2.hook_resid_post``."""
    output: str
    """Folder for the saved dictionary (SAELens format, written by rank 0)."""
    tokens: str | None = None
    """Safetensors file with ``tokens`` ``[n_sequences, pos]`` (give this or ``store``)."""
    store: str | None = None
    """Activation store folder from ``cache_to_shards`` holding ``hook`` (and ``hook_out``) (give this or
    ``tokens``)."""
    model: str | None = None
    """``load_model`` name or folder; None for the embedded model (with ``store``: the store's model; a name
    given must be the store's)."""
    hook_out: str | None = None
    """Hook a transcoder predicts (e.g. ``blocks.2.hook_mlp_out``); None for an SAE."""
    architecture: str = "standard"
    """A registered training architecture."""
    d_sae: int = 1024
    """Number of features."""
    sae: dict[str, Any] = field(default_factory=dict)
    """Fields of the architecture's config (``l1_coefficient``, ``k``...)."""
    train: DictionaryTrainConfig = field(default_factory=DictionaryTrainConfig)
    """Optimisation; ``batch_size`` is the global batch, split over the ranks."""
    sequences_per_chunk: int = 256
    """Sequences run through the model at a time to make activations."""
    checkpoint_dir: str | None = None
    """Resume from / write checkpoints there (rank 0 writes)."""
    seed: int = 0
    """Seeds the SAE's initialisation and the order of the sequences."""

    def __post_init__(self) -> None:
        if self.d_sae < 1 or self.sequences_per_chunk < 1:
            raise ValueError(f"d_sae and sequences_per_chunk must be >= 1, got {self.d_sae} and "
                             f"{self.sequences_per_chunk}")
        if (self.tokens is None) == (self.store is None):
            given = "both" if self.tokens is not None else "neither"
            raise ValueError(f"give exactly one of 'tokens' (a safetensors file of token ids) and 'store' (an "
                             f"activation store folder from cache_to_shards); got {given}")

    @classmethod
    def from_json(cls, path: str | Path) -> DictionaryJob:
        """Read a config file; relative paths in it are taken from its folder."""
        path = Path(path)
        raw = json.loads(path.read_text())
        valid = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(raw) - valid):
            raise ValueError(f"{path} has unknown keys {unknown}; valid keys: {sorted(valid)}")
        train = dict(raw.get("train", {}))
        valid_train = {f.name for f in dataclasses.fields(DictionaryTrainConfig)}
        if unknown := sorted(set(train) - valid_train):
            raise ValueError(f"{path}: train has unknown keys {unknown}; valid keys: {sorted(valid_train)}")
        if "betas" in train:
            train["betas"] = tuple(train["betas"])
        if "stages" in train:
            train["stages"] = tuple(Stage(**s) for s in train["stages"])
        raw["train"] = DictionaryTrainConfig(**train)
        for key in ("tokens", "store", "output", "checkpoint_dir"):
            if raw.get(key) is not None:
                raw[key] = str(path.parent / raw[key])
        model = raw.get("model")
        if model is not None and (path.parent / model).exists():
            raw["model"] = str(path.parent / model)
        return cls(**raw)


def _same_model(given: str, stored: str) -> bool:
    if given == stored:
        return True
    a, b = Path(given).expanduser(), Path(stored).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _store_source(job: DictionaryJob, device: torch.device | str) -> tuple[ShardedSource, str]:
    """The job's store as a source, and the model name the dictionary records (the store's)."""
    try:
        manifest = load_manifest(job.store)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    stored = str(manifest["model"])
    if job.model is not None and not _same_model(job.model, stored):
        raise ValueError(f"model {job.model!r} is not the model the store {job.store} was cached from "
                         f"({stored!r}); leave 'model' out or cache the store from that model")
    try:
        source = ShardedSource(job.store, job.hook, target_hook=job.hook_out, seed=job.seed, device=device)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    return source, stored


def run_job(job: DictionaryJob, progress: bool = True) -> TrainResult:
    """Train the job's dictionary on this process's share of each batch; rank 0 saves it to ``job.output``."""
    from workbench.models import load_model

    ranks = Ranks.current()
    ranks.check_batch_size(job.train.batch_size)  # before the model is loaded
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else "cpu"
    source: ActivationSource
    model: torch.nn.Module | str
    if job.store is not None:
        source, model = _store_source(job, device)
    else:
        model = load_model(job.model, device=device)
        tokens = load_file(job.tokens)["tokens"]
        source = ModelActivationSource(model, tokens, job.hook, job.hook_out, job.sequences_per_chunk,
                                       seed=job.seed)
    torch.manual_seed(job.seed)
    sae = make_training_sae(job.architecture, d_in=source.d_in, d_sae=job.d_sae, device=str(device), **job.sae)
    result = train_dictionary(sae, source, job.train, job.checkpoint_dir, progress=progress)
    if ranks.is_main:
        if job.store is not None:  # the length of the sequences the store was cached from
            sae.cfg.metadata.context_size = int(load_manifest(job.store)["context_size"])
        save_dictionary(sae, job.output, hook_name=job.hook, hook_name_out=job.hook_out, model=model,
                        metadata={"job": dataclasses.asdict(job), "world_size": ranks.world_size,
                                  "final": result.history[-1] if result.history else {}})
    return result
