"""Load a language model as a TransformerLens ``TransformerBridge``, offline.

``load_model()`` gives the embedded default (the small GPT-2 this project trains on its synthetic world,
under ``data/models/embedded``); ``load_model("path/to/hf_dir")`` any local Hugging Face checkpoint;
``load_model("gpt2")`` a hub model whose weights are already in the local Hugging Face cache. Nothing is
downloaded: the package runs with the hub offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench import _offline  # noqa: F401  (sets offline flags before transformers is used)
from workbench.paths import embedded_model_dir

log = logging.getLogger(__name__)

EMBEDDED = "embedded"


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_model_path(name_or_path: str | Path | None = None) -> str:
    """The local directory or hub name ``load_model`` will boot, with actionable errors."""
    if name_or_path is None or str(name_or_path) == EMBEDDED:
        path = embedded_model_dir()
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"the embedded default model is missing: {path} has no config.json. Train it with "
                "`workbench train-model` (or run notebook 02_train_model with retrain=True), or pass a "
                "local Hugging Face directory or a cached hub name such as load_model('gpt2').")
        return str(path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} exists but holds no Hugging Face model (no config.json)")
        return str(path)
    return str(name_or_path)


def load_model(name_or_path: str | Path | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> TransformerBridge:
    """A ``TransformerBridge`` in eval mode on ``device`` (default: CUDA if available, else CPU).

    ``name_or_path``: ``None`` or ``"embedded"`` for the embedded default, a local HF directory, or a hub
    name (``"gpt2"``, ``"EleutherAI/pythia-70m"``) whose weights are in the local cache.
    """
    target = resolve_model_path(name_or_path)
    device = torch.device(device) if device is not None else default_device()
    try:
        bridge = TransformerBridge.boot_transformers(target, device=device, dtype=dtype)
    except OSError as err:  # transformers raises OSError for a name it cannot find offline
        raise OSError(
            f"could not load {target!r} offline: its weights are not in the local Hugging Face cache and "
            "this package never downloads. Use the embedded default with load_model() (trained by "
            "`workbench train-model`), a local Hugging Face directory, or copy the model into the cache "
            f"on a machine with network access first. ({type(err).__name__}: {err})") from err
    bridge.eval()
    log.info("loaded %s on %s", target, device)
    return bridge


def model_name_of(model: torch.nn.Module) -> str:
    """The name ``load_model`` knows this model by: ``"embedded"`` for the embedded default, else the hub name
    or local path it was booted from (recorded in dictionaries, so a dictionary is never used on another model)."""
    name = str(model.cfg.model_name)
    path = Path(name).expanduser()
    if path.exists() and path.resolve() == embedded_model_dir().resolve():
        return EMBEDDED
    return name
