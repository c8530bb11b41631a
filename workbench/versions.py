"""The versions of the packages a result depends on, recorded beside every result so a number can be traced to
the environment that produced it (a transformers upgrade once changed ``generate``'s continuations silently)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("torch", "transformers", "transformer-lens", "sae-lens", "numpy")
"""The distributions whose versions change our numbers (the rest are pinned by ``requirements.lock``)."""

NOT_INSTALLED = "not installed"


def package_versions() -> dict[str, str]:
    """``{"python": ..., "torch": ..., "transformers": ..., ...}``: installed versions, read from package metadata
    (no import needed); a missing package reads ``"not installed"``."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = NOT_INSTALLED
    return out
