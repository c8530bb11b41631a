"""Every numbered notebook executes top to bottom at smoke scale, is committed clean, and writes a results
file the summary can use: every key it reads, and only finite numbers."""

import json
import math
import os
from pathlib import Path

import nbformat
import pytest

from workbench.paths import project_root
from workbench.reproduce import notebook_parameters, notebook_paths, run_notebook
from workbench.results import SCALES

NOTEBOOKS = notebook_paths()
COMMITTED_RESULTS = sorted((project_root() / "results").glob("[0-9][0-9]_*.json"))


def _non_finite(value, path: str) -> list[str]:
    """Paths of the numbers in ``value`` (nested dicts and lists) that are nan or infinite. Strings, booleans
    and None (a value not measured at this scale) are allowed leaves; anything else is reported too."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]")]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [] if math.isfinite(value) else [f"{path} = {value}"]
    return [f"{path} has type {type(value).__name__}, not a number, string, list or dict"]


def results_problems(payload: dict) -> list[str]:
    """What is wrong with a notebook's results payload (``results/<notebook>.json``), as messages; empty when it
    has every key ``write_summary`` reads (``notebook``, ``scale``, ``wall_time_s``, ``metrics``, ``claims``
    with ``claim``/``ours``/``paper`` each) and its metrics and numeric claims are finite."""
    missing = [k for k in ("notebook", "scale", "wall_time_s", "metrics", "claims") if k not in payload]
    if missing:
        return [f"missing keys {missing}"]
    problems = []
    if payload["scale"] not in SCALES:
        problems.append(f"scale {payload['scale']!r} is not one of {SCALES}")
    wall = payload["wall_time_s"]
    if isinstance(wall, bool) or not isinstance(wall, int | float) or not math.isfinite(wall) or wall < 0:
        problems.append(f"wall_time_s = {wall!r} is not a finite number of seconds")
    if not isinstance(payload["metrics"], dict):
        problems.append(f"metrics is a {type(payload['metrics']).__name__}, not a dict")
    problems += [f"non-finite metric {p}" for p in _non_finite(payload["metrics"], "metrics")]
    if not isinstance(payload["claims"], list):
        return [*problems, f"claims is a {type(payload['claims']).__name__}, not a list"]
    for i, claim in enumerate(payload["claims"]):
        absent = [k for k in ("claim", "ours", "paper") if not isinstance(claim, dict) or k not in claim]
        if absent:
            problems.append(f"claims[{i}] lacks {absent}")
            continue
        for key in ("ours", "paper"):
            value = claim[key]
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                problems.append(f"claims[{i}].{key} = {value!r} ({claim['claim']!r}) is neither a number nor text")
            elif not isinstance(value, str) and not math.isfinite(value):
                problems.append(f"claims[{i}].{key} = {value} ({claim['claim']!r}) is not finite; write text such as "
                                "'no run in range' when there is nothing to measure")
    return problems


def _valid_payload() -> dict:
    return {"notebook": "03_x", "scale": "smoke", "wall_time_s": 1.5,
            "metrics": {"l0": 3.0, "runs": [{"ev": 0.9, "architecture": "standard"}], "best": {"gated": None}},
            "claims": [{"claim": "L0 ratio", "ours": 0.5, "paper": "0.5", "target": "<= 0.6"}]}


def test_a_complete_finite_payload_has_no_problems():
    assert results_problems(_valid_payload()) == []


@pytest.mark.parametrize("break_it, expected", [
    (lambda p: p["metrics"]["runs"][0].update(ev=float("nan")), "non-finite metric metrics.runs[0].ev = nan"),
    (lambda p: p["metrics"].update(l0=[1.0, float("inf")]), "non-finite metric metrics.l0[1] = inf"),
    (lambda p: p.pop("wall_time_s"), "missing keys ['wall_time_s']"),
    (lambda p: p["claims"][0].pop("paper"), "claims[0] lacks ['paper']"),
    (lambda p: p["claims"][0].update(ours=float("nan")), "claims[0].ours = nan ('L0 ratio') is not finite"),
    (lambda p: p.update(scale="medium"), "scale 'medium' is not one of"),
], ids=["nan metric", "inf in a list", "missing key", "claim without paper", "nan claim", "unknown scale"])
def test_a_broken_payload_is_reported(break_it, expected):
    payload = _valid_payload()
    break_it(payload)
    problems = results_problems(payload)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


@pytest.mark.parametrize("path", COMMITTED_RESULTS, ids=lambda p: p.stem)
def test_committed_results_are_complete_and_finite(path: Path):
    payload = json.loads(path.read_text())
    assert payload["notebook"] == path.stem and payload["scale"] == "full"
    assert not results_problems(payload), f"{path.name}: {results_problems(payload)}"


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
    """With the parameters ``workbench reproduce`` passes (``train=True`` where declared: the full path)."""
    results = Path(os.environ["WORKBENCH_RESULTS_DIR"])
    executed = run_notebook(path, "smoke", notebook_parameters(path), output_dir=tmp_path)
    written = json.loads((results / f"{path.stem}.json").read_text())
    assert written["scale"] == "smoke" and written["notebook"] == path.stem
    assert not results_problems(written), f"{path.name} wrote a results file the summary cannot use: {results_problems(written)}"
    outputs = [o for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure shows inline"
    noise = [o["text"][:200] for o in outputs if o.get("name") == "stderr" or "Warning" in o.get("text", "")]
    assert not noise, f"{path.name}: executed outputs show warnings or progress bars: {noise}"


def test_notebook_03_fast_path_loads_the_saved_dictionaries(tmp_path):
    """``train=False``, what a learner opening notebook 03 runs: the dictionaries saved in data/dictionaries/ are
    loaded and measured, the sweep comes from the committed results file, and nothing is trained or saved."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("03_"))
    results = Path(os.environ["WORKBENCH_RESULTS_DIR"])
    executed = run_notebook(path, "smoke", {"train": False}, output_dir=tmp_path)
    written = json.loads((results / f"{path.stem}.json").read_text())
    assert written["scale"] == "smoke" and written["metrics"]["path"] == "fast (saved dictionaries)"
    assert not results_problems(written), f"fast path wrote a results file the summary cannot use: {results_problems(written)}"
    assert written["metrics"]["sweep_source"] == "03_sae_and_gated_sae.json" and written["metrics"]["runs"]
    assert all(c["passed"] is not False for c in written["checks"])
    figures = [o for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code" for o in c.outputs
               if "image/png" in o.get("data", {})]
    assert len(figures) >= 2, "the frontier and feature-density figures should show inline"


FAST_PATH_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] in {"04", "05", "06", "07"}]


@pytest.mark.parametrize("path", FAST_PATH_NOTEBOOKS, ids=lambda p: p.stem)
def test_paper_notebook_fast_path_runs_on_the_saved_dictionaries(path: Path, tmp_path):
    """``train=False``, what a learner opening notebooks 04-07 runs: the dictionaries the full run saved in
    data/dictionaries/ are loaded (not trained), the notebook runs to the end and writes a usable results file."""
    results = Path(os.environ["WORKBENCH_RESULTS_DIR"])
    saved = sorted(p.name for p in (project_root() / "data" / "dictionaries").iterdir())
    executed = run_notebook(path, "smoke", {"train": False}, output_dir=tmp_path)
    written = json.loads((results / f"{path.stem}.json").read_text())
    assert written["scale"] == "smoke" and not results_problems(written), results_problems(written)
    assert sorted(p.name for p in (project_root() / "data" / "dictionaries").iterdir()) == saved, \
        f"{path.name}'s fast path wrote into data/dictionaries/"
    outputs = [o for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure shows inline"
