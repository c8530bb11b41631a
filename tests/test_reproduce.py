"""Headless execution: figures land in the executed notebook as PNGs, ``notebook_setup`` leaves no warnings or
progress bars in the outputs, ``notice`` writes one note, and ``reproduce`` passes ``train`` to notebooks that
declare it."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workbench.reproduce import declared_parameters, notebook_parameters, run_notebook


def _write_notebook(path: Path, *sources: str, parameters: str = 'scale = "full"') -> Path:
    """A notebook of a ``parameters`` cell then one code cell per source, for the project's kernel."""
    cells = [new_code_cell(parameters, metadata={"tags": ["parameters"]}), *(new_code_cell(s) for s in sources)]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, path)
    return path


def _outputs(path: Path) -> list[list[dict]]:
    """The outputs of each code cell of an executed notebook, the injected-parameters cell included."""
    return [c.outputs for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_figures_are_inline_images_in_the_executed_notebook(tmp_path):
    source = _write_notebook(tmp_path / "plots.ipynb",
                             "import matplotlib.pyplot as plt\n"
                             "fig, ax = plt.subplots()\nax.plot([0, 1], [1, 0])\nax.set(title='t', xlabel='x', ylabel='y')\n"
                             "plt.show()")
    out = run_notebook(source, "smoke", output_dir=tmp_path / "run")
    assert out == tmp_path / "run" / "plots.ipynb"
    kinds = [k for outputs in _outputs(out) for o in outputs for k in o.get("data", {})]
    assert "image/png" in kinds, f"no figure in the executed notebook (output kinds: {kinds}); is the kernel on Agg?"


def test_setup_leaves_no_stderr_and_notice_shows_once(tmp_path, tiny_model_dir):
    source = _write_notebook(
        tmp_path / "quiet.ipynb",
        "import workbench\nworkbench.notebook_setup()",
        f"model = workbench.load_model({str(tiny_model_dir)!r}, device='cpu')",
        "from workbench.notebook import notice\nnotice('d_model is **{d:d}**', d=model.cfg.d_model)")
    out = run_notebook(source, "smoke", output_dir=tmp_path / "run")
    outputs = [o for cell in _outputs(out) for o in cell]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"notebook_setup let this through to stderr: {stderr}"
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert not widgets, "a progress bar (widget) was displayed in a headless run"
    notes = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert notes == ["d_model is **32**"], f"expected one note with the model's width, got {notes}"


@pytest.mark.parametrize("source, expected", [
    ('scale = "full"\ntrain = False  # load the saved artefacts', {"scale", "train"}),
    ('scale = "full"\nretrain: bool = False', {"scale", "retrain"}),
    ('scale = "full"\n# train = True is the slow path\ntrainer = None', {"scale", "trainer"}),
], ids=["train", "annotated", "comment and prefix"])
def test_declared_parameters_reads_the_parameters_cell(tmp_path, source, expected):
    assert declared_parameters(_write_notebook(tmp_path / "p.ipynb", "x = 1", parameters=source)) == expected


def test_reproduce_passes_train_to_notebooks_that_declare_it_and_retrain_to_02(tmp_path):
    trains = _write_notebook(tmp_path / "05_x.ipynb", parameters='scale = "full"\ntrain = False')
    plain = _write_notebook(tmp_path / "04_x.ipynb")
    model = _write_notebook(tmp_path / "02_train_model.ipynb", parameters='scale = "full"\nretrain = False')
    assert notebook_parameters(trains) == {"train": True}
    assert notebook_parameters(plain) == {}
    assert notebook_parameters(model, retrain=True) == {"retrain": True}
