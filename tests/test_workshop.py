"""The exercises edition: solutions become stubs that keep the signature and docstring, checks and parameters stay,
the stub fails its check, and the builder writes valid notebooks from the real ones."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from workbench import cli, workshop
from workbench.paths import notebooks_dir
from workbench.workshop import STUB, build_exercises, set_workshop_metadata, stub_source

SOLUTION = '''import torch


@torch.no_grad()
def sae_encode(x, W_enc,
               b_enc, b_dec) -> torch.Tensor:
    """ReLU((x - b_dec) @ W_enc + b_enc): the SAE's codes, "non-negative"."""
    # subtract the decoder bias first
    centred = x - b_dec
    return torch.relu(centred @ W_enc + b_enc)


def unused(a): return a + 1

codes = sae_encode(torch.ones(2, 6), torch.ones(6, 6), torch.zeros(6), torch.zeros(6))'''

WORKSHOP = {"objectives": ["Encode by hand."], "minutes": 10, "predict": ["How many codes are zero?"]}


def _synthetic(tmp_path: Path, with_metadata: bool = True) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 99 · Synthetic\n\nA notebook for tests."),
        nbformat.v4.new_code_cell('scale = "full"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(SOLUTION, metadata={"tags": ["solution"]},
                                  outputs=[nbformat.v4.new_output("stream", text="old output")], execution_count=3),
        nbformat.v4.new_code_cell("from workbench import exercises\n\nexercises.check_sae_encode(sae_encode)",
                                  metadata={"tags": ["check"]}),
    ]
    if with_metadata:
        nb.metadata["workshop"] = WORKSHOP
    path = tmp_path / "99_synthetic.ipynb"
    nbformat.write(nb, path)
    return path


def _run(cell_source: str, namespace: dict) -> None:
    exec(compile(cell_source, "<cell>", "exec"), namespace)


def test_stub_keeps_signature_docstring_and_usage_and_drops_the_body():
    out = stub_source(SOLUTION)
    ast.parse(out)
    assert '@torch.no_grad()\ndef sae_encode(x, W_enc,\n               b_enc, b_dec) -> torch.Tensor:\n' in out
    assert '    """ReLU((x - b_dec) @ W_enc + b_enc): the SAE\'s codes, "non-negative"."""\n    ' + STUB in out
    assert "def unused(a):\n    " + STUB in out
    assert out.startswith("import torch\n") and out.endswith("codes = sae_encode(torch.ones(2, 6), torch.ones(6, 6), "
                                                             "torch.zeros(6), torch.zeros(6))")
    for leaked in ("centred", "subtract the decoder bias", "torch.relu(", "a + 1"):
        assert leaked not in out, f"the stub leaks the solution: {leaked!r}"


def test_a_solution_cell_without_a_function_or_with_a_magic_is_refused():
    with pytest.raises(ValueError, match="defines no top-level function"):
        stub_source("x = 1")
    with pytest.raises(ValueError, match="IPython magics"):
        stub_source("%time f()\ndef f():\n    return 1")


def test_exercises_edition_of_a_synthetic_notebook(tmp_path, capsys):
    source = _synthetic(tmp_path)
    out = build_exercises(source, tmp_path / "workshop")
    assert out == tmp_path / "workshop" / "99_synthetic_exercises.ipynb"
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].source.startswith("# 99 · Synthetic (exercises)")
    intro = nb.cells[1].source
    for text in ("Learning objectives", "- Encode by hand.", "Rough time", "About 10 minutes", "Predict before you run",
                 "1. How many codes are zero?"):
        assert text in intro
    params, stub, check = nb.cells[2:]
    assert params.source == 'scale = "full"' and params.metadata.tags == ["parameters"]
    assert stub.metadata.tags == ["exercise"] and STUB in stub.source and "centred" not in stub.source
    assert "def sae_encode(x, W_enc," in stub.source and "the SAE's codes" in stub.source
    assert check.metadata.tags == ["check"] and "check_sae_encode(sae_encode)" in check.source
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")

    # the original's solution passes its check; the stub fails it with NotImplementedError, usage line included
    original = nbformat.read(source, as_version=4)
    namespace: dict = {}
    for cell in original.cells[1:]:
        _run(cell.source, namespace)
    assert "✓ sae_encode passed" in capsys.readouterr().out
    namespace = {}
    _run(params.source, namespace)
    with pytest.raises(NotImplementedError, match="Your code here"):
        _run(stub.source, namespace)
    with pytest.raises(NotImplementedError, match="Your code here"):
        _run(check.source, namespace)


def test_without_workshop_metadata_the_intro_says_only_how_to_work(tmp_path):
    nb = nbformat.read(build_exercises(_synthetic(tmp_path, with_metadata=False), tmp_path), as_version=4)
    assert "Workshop edition" in nb.cells[1].source and "Learning objectives" not in nb.cells[1].source


def test_set_workshop_metadata_changes_only_the_metadata(tmp_path):
    path = _synthetic(tmp_path, with_metadata=False)
    before = json.loads(path.read_text())
    set_workshop_metadata(path, ["Read L0."], 45, ["Which is sparser?", "By how much?"])
    after = json.loads(path.read_text())
    assert after["cells"] == before["cells"]
    assert after["metadata"]["workshop"] == {"objectives": ["Read L0."], "minutes": 45,
                                             "predict": ["Which is sparser?", "By how much?"]}
    with pytest.raises(ValueError, match="minutes must be a positive int, got 0"):
        set_workshop_metadata(path, ["Read L0."], 0, ["?"])
    with pytest.raises(ValueError, match="objectives must be a non-empty list"):
        set_workshop_metadata(path, "Read L0.", 10, ["?"])


def test_cli_builds_only_notebooks_with_solutions(tmp_path, monkeypatch, capsys):
    with_solutions = _synthetic(tmp_path)
    without = tmp_path / "98_plain.ipynb"
    shutil.copy(with_solutions, without)
    plain = nbformat.read(without, as_version=4)
    plain.cells = [c for c in plain.cells if "solution" not in c.metadata.get("tags", [])]
    nbformat.write(plain, without)
    monkeypatch.setattr(workshop, "notebook_paths", lambda only=None: [without, with_solutions])
    assert cli.main(["workshop", "--out", str(tmp_path / "out")]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["99_synthetic_exercises.ipynb"]
    monkeypatch.setattr(workshop, "notebook_paths", lambda only=None: [without])
    assert cli.main(["workshop", "--out", str(tmp_path / "none")]) == 1
    assert "no notebook has cells tagged `solution`" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["00_quickstart", "03_sae_and_gated_sae"])
def test_exercises_edition_of_the_real_notebooks(tmp_path, name):
    source = notebooks_dir() / f"{name}.ipynb"
    if not workshop.has_solutions(source):
        pytest.skip(f"{name} has no cell tagged 'solution' yet (being written); this test runs once it does")
    out = build_exercises(source, tmp_path)
    assert out.name == f"{name}_exercises.ipynb"
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    original = nbformat.read(source, as_version=4)
    n_solutions = sum("solution" in c.metadata.get("tags", []) for c in original.cells)
    stubs = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    assert len(stubs) == n_solutions and all(STUB in c.source for c in stubs)
    assert not any("solution" in c.metadata.get("tags", []) for c in nb.cells)
    assert sum("check" in c.metadata.get("tags", []) for c in nb.cells) == sum(
        "check" in c.metadata.get("tags", []) for c in original.cells)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    if "workshop" in original.metadata:
        assert "Learning objectives" in nb.cells[1].source


def test_build_workshop_writes_each_real_notebook_with_solutions(tmp_path):
    expected = [p for p in (notebooks_dir() / f"{n}.ipynb" for n in ("00_quickstart", "03_sae_and_gated_sae"))
                if workshop.has_solutions(p)]
    if not expected:
        pytest.skip("neither 00 nor 03 has a cell tagged 'solution' yet (being written); this test runs once one does")
    written = workshop.build_workshop(out_dir=tmp_path, only=["00", "03"])
    assert [p.name for p in written] == [f"{p.stem}_exercises.ipynb" for p in expected]
    for path in written:
        nbformat.validate(nbformat.read(path, as_version=4))
