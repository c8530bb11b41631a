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


@pytest.mark.parametrize("target, passing, failing", [
    (">= 0.9", [0.9, 1.0], [0.8999, float("nan")]),
    ("<= 0.6", [0.6, -1.0], [0.61]),
    ("> 0", [1e-9], [0.0, -0.1]),
    ("< 1", [0.999], [1.0]),
    ("near 1", [0.95, 1.0, 1.049], [0.94, 1.06]),
    ("in [0.4, 0.6]", [0.4, 0.5, 0.6], [0.39, 0.61]),
    ("  >=1e-3 ", [0.001], [0.0009]),
], ids=["ge", "le", "gt", "lt", "near", "interval", "spaces and exponent"])
def test_target_grammar(target, passing, failing):
    from workbench.results import parse_target

    test = parse_target(target)
    assert test is not None, f"{target!r} should parse"
    assert all(test(v) for v in passing), [v for v in passing if not test(v)]
    assert not any(test(v) for v in failing), [v for v in failing if test(v)]


@pytest.mark.parametrize("text", ["below gated", "aim >= 0.8", "= paper", "", "near", "in [0.4]"])
def test_free_text_targets_are_not_judged(text):
    from workbench.results import parse_target

    assert parse_target(text) is None


def test_an_empty_interval_is_rejected():
    from workbench.results import parse_target

    with pytest.raises(ValueError, match=r"in \[0.4, 0.6\]"):
        parse_target("in [0.6, 0.4]")


def test_claims_are_marked_met_or_short_and_counted_in_the_summary(tmp_path):
    r = NotebookResults("96_met", "full")
    r.claim("ratio", 0.55, 0.5, target="<= 0.6")
    r.claim("recovered", 0.85, "—", target=">= 0.9")
    r.claim("gamma", 0.9, "< 1", target="below gated")
    r.claim("verdict", "yes", "yes", target=">= 0.9")
    assert [c.met for c in r.claims] == [True, False, None, None]
    data = json.loads(r.write(tmp_path).read_text())
    assert [c["met"] for c in data["claims"]] == [True, False, None, None]
    (tmp_path / "95_old.json").write_text(json.dumps({"notebook": "95_old", "scale": "full", "claims": [
        {"claim": "old", "ours": 0.99, "paper": "—", "target": ">= 0.95"}]}))  # written before `met` existed
    summary = write_summary(tmp_path).read_text()
    assert "**2 met, 1 short, 2 not judged.**" in summary.split("## Claims")[0]
    assert "| met? | claim | ours | paper | target | notebook | scale |" in summary
    assert "| met | ratio | 0.55 | 0.5 | <= 0.6 | 96_met | full |" in summary
    assert "| short | recovered | 0.85 | — | >= 0.9 | 96_met | full |" in summary
    assert "| — | gamma | 0.9 | < 1 | below gated | 96_met | full |" in summary
    assert "| met | old | 0.99 | — | >= 0.95 | 95_old | full |" in summary


def test_a_check_that_passes_returns_its_value_and_is_recorded(tmp_path):
    r = NotebookResults("94_check", "full")
    assert r.check("QA accuracy", 0.97, full=">= 0.95", smoke=">= 0.2") == 0.97
    assert json.loads(r.write(tmp_path).read_text())["checks"] == [
        {"name": "QA accuracy", "value": 0.97, "bar": ">= 0.95", "passed": True}]


def test_a_failing_check_raises_with_value_bar_scale_and_hint():
    from workbench.results import SanityCheckError

    r = NotebookResults("94_check", "smoke")
    with pytest.raises(SanityCheckError) as err:
        r.check("QA accuracy", 0.1, full=">= 0.95", smoke=">= 0.2", hint="is data/models/embedded the trained model?")
    message = str(err.value)
    for part in ("'QA accuracy'", "0.1", ">= 0.2", "smoke scale", "is data/models/embedded the trained model?"):
        assert part in message, f"{part!r} missing from {message!r}"
    assert isinstance(err.value, AssertionError)
    assert r.checks == [{"name": "QA accuracy", "value": 0.1, "bar": ">= 0.2", "passed": False}]


def test_a_check_without_a_smoke_bar_is_skipped_at_smoke_scale():
    r = NotebookResults("94_check", "smoke")
    assert r.check("unseen-template QA", 0.0, full=">= 0.4") == 0.0
    assert r.checks == [{"name": "unseen-template QA", "value": 0.0, "bar": None, "passed": None}]
    with pytest.raises(ValueError, match="not one of"):
        NotebookResults("94_check", "full").check("x", 1.0, full="high")
