"""Where the project keeps its data, models and results.

Everything is resolved relative to the repository root (the folder holding ``pyproject.toml``), or to
``$WORKBENCH_ROOT`` when set, so notebooks, tests and the CLI agree on locations wherever they run.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root, or ``$WORKBENCH_ROOT`` when set."""
    env = os.environ.get("WORKBENCH_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Synthesized data sets, the embedded model and small trained dictionaries."""
    return project_root() / "data"


def datasets_dir() -> Path:
    return data_dir() / "datasets"


def models_dir() -> Path:
    return data_dir() / "models"


def embedded_model_dir() -> Path:
    """The embedded default model, in Hugging Face format (written by ``workbench train-model``)."""
    return models_dir() / "embedded"


def results_dir() -> Path:
    """Result JSONs and figures; ``$WORKBENCH_RESULTS_DIR`` redirects them (tests do, so smoke runs never
    overwrite the committed full-scale results)."""
    env = os.environ.get("WORKBENCH_RESULTS_DIR")
    return Path(env).expanduser().resolve() if env else project_root() / "results"


def figures_dir() -> Path:
    return results_dir() / "figures"


def runs_dir() -> Path:
    """Executed notebooks (git-ignored)."""
    return results_dir().parent / "runs" if os.environ.get("WORKBENCH_RESULTS_DIR") else project_root() / "runs"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"
