"""Execute the numbered notebooks headlessly with papermill and summarise their results.

Executed copies go to the git-ignored ``runs/<scale>/`` folder; each notebook writes its own
``results/<notebook>.json`` and figures; ``results/summary.md`` is regenerated at the end.

The kernel runs with matplotlib's inline backend, so every figure a cell creates is stored in the executed
notebook as an ``image/png`` output (the Agg backend would render nothing there), and with
``WORKBENCH_HEADLESS=1``, which :func:`workbench.notebook_setup` reads to turn progress bars off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.paths import notebooks_dir, results_dir, runs_dir
from workbench.results import write_summary

log = logging.getLogger(__name__)

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
KERNEL_ENV = {"MPLBACKEND": INLINE_BACKEND, "WORKBENCH_HEADLESS": "1", "TQDM_DISABLE": "1"}
"""Environment of a headless kernel: inline figures, and no progress bars (``TQDM_DISABLE`` covers tqdm bars
created with their default ``disable``; ``notebook_setup`` covers the rest)."""


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


def declared_parameters(path: str | Path) -> set[str]:
    """The names the notebook's ``parameters`` cell assigns (e.g. {"scale", "train"}), as papermill reads them."""
    import papermill

    return set(papermill.inspect_notebook(str(path)))


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` (which a kernel started inside inherits), restoring it afterwards."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_notebook(path: str | Path, scale: str, extra_parameters: dict | None = None, output_dir: Path | None = None,
                 kernel_name: str = "python3") -> Path:
    """Execute the notebook at ``path`` (any notebook with a ``parameters`` cell) with ``scale`` and the extra
    parameters injected, in a kernel with inline figures and ``WORKBENCH_HEADLESS=1`` (so ``notebook_setup()`` turns
    progress bars off); returns the executed copy in ``output_dir`` (default ``runs/<scale>/``)."""
    import papermill

    path = Path(path)
    output_dir = Path(output_dir) if output_dir is not None else runs_dir() / scale
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / path.name
    params = {"scale": scale} | (extra_parameters or {})
    with _environment(KERNEL_ENV):
        papermill.execute_notebook(str(path), str(out), parameters=params, cwd=str(path.resolve().parent),
                                   kernel_name=kernel_name, progress_bar=False, log_output=False)
    return out


def notebook_parameters(path: Path, retrain: bool = False) -> dict:
    """The parameters ``reproduce`` passes besides ``scale``: ``train=True`` to notebooks that declare ``train``
    (reproduce always takes the full path, training included), ``retrain`` to notebook 02."""
    extra: dict = {}
    if "train" in declared_parameters(path):
        extra["train"] = True
    if path.name.startswith("02_"):
        extra["retrain"] = retrain
    return extra


def reproduce(scale: str = "full", only: list[str] | None = None, retrain: bool = False,
              export: bool = False) -> Path:
    """Run the notebooks in order, then write ``results/summary.md``; returns its path. With ``export``, the
    executed notebooks are also converted to offline HTML in ``runs/<scale>/html/``."""
    for path in notebook_paths(only):
        extra = notebook_parameters(path, retrain)
        log.info("running %s at scale=%s with %s", path.name, scale, extra)
        run_notebook(path, scale, extra)
    summary = write_summary(results_dir())
    if export:
        from workbench.export import export_html

        written = export_html(scale)
        log.info("exported %d notebooks to %s", len(written), written[0].parent if written else "-")
    return summary
