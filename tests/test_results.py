import json

import pytest

from workbench.results import NotebookResults, write_summary


def test_results_record_scale_and_summary_lists_every_claim(tmp_path):
    r = NotebookResults("99_example", "smoke")
    r.metrics["x"] = 1.5
    r.claim("gated L0 ratio", 0.55, 0.5, target="<= 0.6")
    path = r.write(tmp_path)
    data = json.loads(path.read_text())
    assert data["scale"] == "smoke" and data["wall_time_s"] >= 0 and data["metrics"] == {"x": 1.5}
    summary = write_summary(tmp_path).read_text()
    assert "| gated L0 ratio | 0.55 | 0.5 | <= 0.6 | 99_example | smoke |" in summary


def test_unknown_scale_is_rejected():
    with pytest.raises(ValueError, match="scale"):
        NotebookResults("00_x", "medium")


def test_benchmarks_write_their_own_file(tmp_path):
    from workbench.results import write_benchmark

    path = write_benchmark("example", {"tokens_per_s": 1.5}, tmp_path)
    assert path.name == "bench_example.json" and json.loads(path.read_text())["tokens_per_s"] == 1.5


def test_results_and_benchmarks_record_versions_and_summary_shows_them(tmp_path):
    from workbench.results import write_benchmark
    from workbench.versions import package_versions

    versions = package_versions()
    assert set(versions) == {"python", "torch", "transformers", "transformer-lens", "sae-lens", "numpy"}
    r = NotebookResults("98_versions", "smoke")
    assert json.loads(r.write(tmp_path).read_text())["versions"] == versions
    payload = {"tokens_per_s": 1.5}
    assert json.loads(write_benchmark("v", payload, tmp_path).read_text())["versions"] == versions
    assert payload == {"tokens_per_s": 1.5}  # the caller's dict is not changed
    (tmp_path / "97_old.json").write_text(json.dumps({"notebook": "97_old", "scale": "full", "claims": []}))
    summary = write_summary(tmp_path).read_text()
    env = summary.split("## Environment")[1]
    assert "| notebook | torch | transformers | transformer-lens | sae-lens | numpy |" in env
    assert (f"| 98_versions | {versions['torch']} | {versions['transformers']} | {versions['transformer-lens']} | "
            f"{versions['sae-lens']} | {versions['numpy']} |") in env
    assert "| 97_old | not recorded | not recorded | not recorded | not recorded | not recorded |" in env
