"""workbench: a Jupyter-first mechanistic-interpretability workbench over TransformerLens and SAELens."""

from workbench import _offline  # noqa: F401  (must run before transformers / wandb are imported)
from workbench.dictionaries import load_dictionary
from workbench.models import default_device, load_model
from workbench.notebook import notebook_setup

__all__ = ["default_device", "load_dictionary", "load_model", "notebook_setup"]
