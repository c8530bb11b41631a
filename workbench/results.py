"""Result files: each notebook writes ``results/<notebook>.json`` with its scale, wall time, metrics and
the paper claims it measures; ``summary.md`` is generated from them (numbers are never typed in)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.paths import results_dir
from workbench.versions import PACKAGES, package_versions

SCALES = ("full", "smoke")

NEAR_TOLERANCE = 0.05
"""How far from ``x`` a value may be for ``"near x"``."""

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COMPARISON = re.compile(rf"^(>=|<=|>|<)\s*({_NUMBER})$")
_NEAR = re.compile(rf"^near\s+({_NUMBER})$")
_INTERVAL = re.compile(rf"^in\s*\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]$")
TARGET_FORMS = ('">= 0.9"', '"<= 0.6"', '"> 0"', '"< 1"', f'"near 1" (within {NEAR_TOLERANCE})', '"in [0.4, 0.6]"')


@dataclass(frozen=True)
class Target:
    """A bar a number can be judged against, parsed from text such as ``">= 0.9"`` (see :func:`parse_target`)."""

    text: str
    """The bar as written."""
    low: float
    """Smallest passing value (``-inf`` when unbounded below)."""
    high: float
    """Largest passing value (``inf`` when unbounded above)."""
    strict: bool = False
    """Whether ``low``/``high`` themselves fail (``>`` and ``<``)."""

    def __call__(self, value: float) -> bool:
        value = float(value)
        if math.isnan(value):
            return False
        if self.strict:
            return self.low < value < self.high
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return self.text


def parse_target(text: str) -> Callable[[float], bool] | None:
    """The test a target such as ``">= 0.9"``, ``"<= 0.6"``, ``"> 0"``, ``"< 1"``, ``"near 1"`` (within 0.05)
    or ``"in [0.4, 0.6]"`` stands for, or ``None`` for free text (``"below gated"``), which is not judged."""
    text = text.strip()
    if m := _COMPARISON.match(text):
        op, x = m.group(1), float(m.group(2))
        low, high = (x, math.inf) if op.startswith(">") else (-math.inf, x)
        return Target(text, low, high, strict=len(op) == 1)
    if m := _NEAR.match(text):
        x = float(m.group(1))
        return Target(text, x - NEAR_TOLERANCE, x + NEAR_TOLERANCE)
    if m := _INTERVAL.match(text):
        low, high = float(m.group(1)), float(m.group(2))
        if low > high:
            raise ValueError(f"target {text!r} is an empty interval: {low} > {high}; write it as in [{high}, {low}]")
        return Target(text, low, high)
    return None


def judge(value: float | str, target: str) -> bool | None:
    """Whether ``value`` meets ``target``: True or False, or None when the value is not a number or the target is
    free text."""
    test = parse_target(target) if target else None
    if test is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return test(value)


class SanityCheckError(AssertionError):
    """A notebook's headline number missed its bar: something upstream (environment, data, model) is wrong."""


@dataclass
class Claim:
    """One paper claim beside our measurement of it."""

    claim: str
    """What is measured, in words."""
    ours: float | str
    """Our measured value."""
    paper: float | str
    """The paper's value (or its qualitative result)."""
    target: str = ""
    """The bar we aim for, e.g. ">= 0.95" (see :func:`parse_target`); free text is shown but not judged."""
    met: bool | None = field(init=False)
    """Whether ``ours`` meets ``target``; None when either is not a number or a judgeable bar."""

    def __post_init__(self) -> None:
        self.met = judge(self.ours, self.target)


@dataclass
class NotebookResults:
    """Accumulates a notebook's headline numbers; ``write()`` saves them with the run's scale and wall time."""

    notebook: str
    scale: str
    metrics: dict = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")

    def claim(self, claim: str, ours: float | str, paper: float | str, target: str = "") -> None:
        """Record a paper claim beside our number; a judgeable ``target`` marks it met or short in the summary."""
        self.claims.append(Claim(claim, ours, paper, target))

    def check(self, name: str, value: float, full: str, smoke: str | None = None, hint: str = "") -> float:
        """Assert a headline number: ``value`` must meet the bar of this run's scale (``full``, or ``smoke`` at
        smoke scale, where no bar means no check). The outcome goes into the JSON's ``checks``; a miss raises
        :class:`SanityCheckError` naming the check, value, bar and scale, and ``hint``: what is probably wrong
        (environment, data, model). Returns ``value``, so a cell can check and use it in one line."""
        value = float(value)
        bar = full if self.scale == "full" else smoke
        test = parse_target(bar) if bar is not None else None
        if bar is not None and test is None:
            raise ValueError(f"check {name!r}: bar {bar!r} is not one of {', '.join(TARGET_FORMS)}")
        passed = None if test is None else test(value)
        self.checks = [c for c in self.checks if c["name"] != name]
        self.checks.append({"name": name, "value": value, "bar": bar, "passed": passed})
        if passed is False:
            other = f" (the full-scale bar is {full!r})" if self.scale != "full" else ""
            raise SanityCheckError(f"sanity check {name!r} failed at {self.scale} scale: {value:.4g} is not {bar}"
                                   f"{other}. {hint or 'Look at what produced it: environment, data, model.'}")
        return value

    def write(self, directory: str | Path | None = None) -> Path:
        out = Path(directory) if directory is not None else results_dir()
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "notebook": self.notebook,
            "scale": self.scale,
            "wall_time_s": round(time.perf_counter() - self.started, 1),
            "metrics": self.metrics,
            "claims": [asdict(c) for c in self.claims],
            "checks": self.checks,
            "versions": package_versions(),
        }
        path = out / f"{self.notebook}.json"
        path.write_text(json.dumps(payload, indent=1, default=_jsonable))
        return path


def write_benchmark(name: str, payload: dict, directory: str | Path | None = None) -> Path:
    """Save a benchmark's measurements as ``results/bench_<name>.json`` (benchmarks, never tests, time things),
    with the package versions they were measured under (``payload`` itself is not changed)."""
    out = Path(directory) if directory is not None else results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{name}.json"
    path.write_text(json.dumps(payload | {"versions": package_versions()}, indent=1, default=_jsonable))
    return path


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


NOT_RECORDED = "not recorded"


def _environment_row(data: dict) -> str:
    """One ``## Environment`` row: the notebook and the versions its JSON recorded (older JSONs recorded none)."""
    versions = data.get("versions") or {}
    return "| " + " | ".join([data["notebook"], *(str(versions.get(p, NOT_RECORDED)) for p in PACKAGES)]) + " |"


MET_MARKS = {True: "met", False: "short", None: "—"}


def _met(claim: dict) -> bool | None:
    """A claim's recorded ``met``, or its judgement now for results written before claims recorded one."""
    return claim["met"] if "met" in claim else judge(claim["ours"], claim.get("target", ""))


def write_summary(directory: str | Path | None = None) -> Path:
    """``summary.md``: one row per claim of every ``results/*.json`` (met or short against its target, our number,
    the paper's, notebook, scale) with the counts at the top, each run's scale and wall time, and the package
    versions each notebook ran with."""
    directory = Path(directory) if directory is not None else results_dir()
    rows = ["| met? | claim | ours | paper | target | notebook | scale |", "|---|---|---|---|---|---|---|"]
    counts = dict.fromkeys(MET_MARKS, 0)
    runs = ["| notebook | scale | wall time (s) |", "|---|---|---|"]
    env = ["| notebook | " + " | ".join(PACKAGES) + " |", "|---" * (len(PACKAGES) + 1) + "|"]
    for path in sorted(directory.glob("[0-9][0-9]_*.json")):
        data = json.loads(path.read_text())
        runs.append(f"| {data['notebook']} | {data['scale']} | {data.get('wall_time_s', '')} |")
        env.append(_environment_row(data))
        for c in data.get("claims", []):
            met = _met(c)
            counts[met] += 1
            rows.append(f"| {MET_MARKS[met]} | {c['claim']} | {_fmt(c['ours'])} | {_fmt(c['paper'])} | "
                        f"{c.get('target', '')} | {data['notebook']} | {data['scale']} |")
    tally = f"**{counts[True]} met, {counts[False]} short, {counts[None]} not judged.**"
    text = ("# Results\n\nGenerated by `workbench reproduce` from `results/*.json`; every number was written by "
            "the notebook named beside it, at the scale given.\n\n" + tally + "\n\n## Claims\n\n" +
            "\n".join(rows) +
            "\n\n## Runs\n\n" + "\n".join(runs) + "\n\n## Environment\n\n" + "\n".join(env) + "\n")
    out = directory / "summary.md"
    out.write_text(text)
    return out
