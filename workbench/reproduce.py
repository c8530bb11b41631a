"""Execute the numbered notebooks headlessly with papermill and summarise their results.

Executed copies go to the git-ignored ``runs/<scale>/`` folder; each notebook writes its own
``results/<notebook>.json`` and figures; ``results/summary.md`` is regenerated at the end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from workbench.paths import notebooks_dir, results_dir, runs_dir
from workbench.results import write_summary

log = logging.getLogger(__name__)


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose number is in ``only`` (e.g. ["03"])."""
    paths = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if only is not None:
        known = {p.name[:2] for p in paths}
        unknown = sorted(set(only) - known)
        if unknown:
            raise ValueError(f"no notebook numbered {unknown}; available: {sorted(known)}")
        paths = [p for p in paths if p.name[:2] in only]
    return paths


def run_notebook(path: Path, scale: str, extra_parameters: dict | None = None, output_dir: Path | None = None,
                 kernel_name: str = "python3") -> Path:
    """Execute one notebook with ``scale`` (and extra parameters) injected into its ``parameters`` cell."""
    import papermill

    output_dir = output_dir or runs_dir() / scale
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / path.name
    params = {"scale": scale} | (extra_parameters or {})
    env_before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    try:
        papermill.execute_notebook(str(path), str(out), parameters=params, cwd=str(path.parent),
                                   kernel_name=kernel_name, progress_bar=False, log_output=False)
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_before
    return out


def reproduce(scale: str = "full", only: list[str] | None = None, retrain: bool = False) -> Path:
    """Run the notebooks in order, then write ``results/summary.md``; returns its path."""
    for path in notebook_paths(only):
        extra = {"retrain": retrain} if path.name.startswith("02_") else None
        log.info("running %s at scale=%s", path.name, scale)
        run_notebook(path, scale, extra)
    return write_summary(results_dir())
