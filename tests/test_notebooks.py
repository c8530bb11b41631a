"""Every numbered notebook executes top to bottom at smoke scale, and is committed clean."""

import json
import os
from pathlib import Path

import nbformat
import pytest

from workbench.reproduce import notebook_paths, run_notebook

NOTEBOOKS = notebook_paths()


def test_there_are_notebooks_to_test():
    assert [p.name[:2] for p in NOTEBOOKS][:3] == ["00", "01", "02"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(path: Path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'scale = "full"' in params[0].source
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them (nbstripout) before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_scale(path: Path, tmp_path):
    results = Path(os.environ["WORKBENCH_RESULTS_DIR"])
    run_notebook(path, "smoke", output_dir=tmp_path)
    written = json.loads((results / f"{path.stem}.json").read_text())
    assert written["scale"] == "smoke" and written["notebook"] == path.stem
