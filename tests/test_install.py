"""The install is reproducible: ``requirements.lock`` pins one exact version per package (never torch or a CUDA
package), covers every dependency pyproject.toml names, matches the environment the tests run in (so a drifted
.venv is caught), and install.sh / environment.yml install from it. Each check is a small function over text,
tested once on the real files and once on a doctored copy that it must reject."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from workbench.paths import project_root

ROOT = project_root()
LOCK = ROOT / "requirements.lock"
RESULT_PACKAGES = ("transformers", "transformer-lens", "sae-lens", "numpy")
"""Packages whose version changes our numbers: the lock must hold what is installed."""
FORBIDDEN = re.compile(r"^(torch|workbench|nvidia[-_.].*|triton|cuda[-_.].*)$")


def lock_pins(text: str) -> dict[str, str]:
    """``{canonical name: version}`` of a lock; raises on a line that is not ``name==version`` or a repeated name."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if m is None:
            raise ValueError(f"not an exact name==version pin: {line!r}")
        name = canonicalize_name(m[1])
        if name in pins:
            raise ValueError(f"{name} pinned twice ({pins[name]} and {m[2]})")
        pins[name] = m[2]
    return pins


def forbidden_pins(pins: dict[str, str]) -> list[str]:
    """Pins the lock must not hold: torch (install.sh installs it first), CUDA packages, workbench itself."""
    return sorted(name for name in pins if FORBIDDEN.match(name))


def drifted(pins: dict[str, str], installed: dict[str, str]) -> dict[str, tuple[str | None, str]]:
    """``{name: (locked, installed)}`` where the lock disagrees with the environment (or lacks the package)."""
    return {n: (pins.get(canonicalize_name(n)), v) for n, v in installed.items()
            if pins.get(canonicalize_name(n)) != v}


def project_requirements(pyproject_text: str) -> list[Requirement]:
    """pyproject.toml's ``[project].dependencies`` and its dev extra, torch left out (it is not locked)."""
    project = tomllib.loads(pyproject_text)["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    return [r for r in reqs if canonicalize_name(r.name) != "torch"]


def unmet_requirements(reqs: list[Requirement], pins: dict[str, str]) -> list[str]:
    """Requirements the lock does not satisfy: the package is missing or its pinned version is out of range."""
    bad = []
    for r in reqs:
        pinned = pins.get(canonicalize_name(r.name))
        if pinned is None or not r.specifier.contains(pinned, prereleases=True):
            bad.append(f"{r} (lock: {pinned})")
    return bad


def pip_section(env_yml_text: str) -> list[str]:
    """The pip entries of a conda environment file."""
    deps = yaml.safe_load(env_yml_text)["dependencies"]
    return next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)


# -- the real files --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return lock_pins(LOCK.read_text())


def test_lock_pins_one_exact_version_per_package(pins):
    assert len(pins) > 50 and {"transformers", "transformer-lens", "sae-lens", "numpy"} <= pins.keys()


def test_lock_has_no_torch_cuda_or_workbench(pins):
    assert forbidden_pins(pins) == []
    assert not re.search(r"(?im)^\s*(-e|torch\b|nvidia|triton)", LOCK.read_text())


def test_lock_pins_transformers_below_the_generate_bug(pins):
    assert Version(pins["transformers"]) < Version("5.24")


def test_lock_matches_the_installed_versions(pins):
    installed = {name: version(name) for name in RESULT_PACKAGES}
    assert drifted(pins, installed) == {}, "the environment drifted from requirements.lock: rerun scripts/install.sh"


def test_lock_covers_every_dependency_of_pyproject(pins):
    reqs = project_requirements((ROOT / "pyproject.toml").read_text())
    assert {"transformers", "pytest"} <= {canonicalize_name(r.name) for r in reqs}
    assert unmet_requirements(reqs, pins) == []


def test_environment_yml_installs_torch_then_the_lock_then_workbench():
    assert pip_section((ROOT / "environment.yml").read_text()) == ["torch==2.13.0", "-r requirements.lock", "-e ."]


def test_install_sh_installs_from_the_lock_and_stamps_it():
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert re.search(r"pip install .*-r requirements\.lock", script)
    assert "--no-deps -e ." in script and '-e ".[dev]"' not in script
    assert re.search(r"cat pyproject\.toml requirements\.lock \| sha256sum", script)  # the stamp hashes both
    assert re.search(r'-c "\$constraints"', script)  # pip cannot replace the installed torch


# -- each check rejects a doctored lock --------------------------------------------------------------------------------


def test_checks_reject_a_doctored_lock(pins):
    with pytest.raises(ValueError, match="twice"):
        lock_pins("numpy==2.4.6\nNumPy==2.4.5\n")
    with pytest.raises(ValueError, match="exact"):
        lock_pins("numpy>=2\n")
    assert forbidden_pins(lock_pins("torch==2.13.0\nnvidia-cublas-cu12==12.8.4.1\ntriton==3.5.0\nnumpy==2\n")) == [
        "nvidia-cublas-cu12", "torch", "triton"]
    other = dict(pins, transformers="5.24.0")
    assert drifted(other, {"transformers": version("transformers")}) == {
        "transformers": ("5.24.0", version("transformers"))}
    assert drifted({}, {"numpy": "2.4.6"}) == {"numpy": (None, "2.4.6")}
    reqs = [Requirement("transformers>=4.50,<5.24"), Requirement("tqdm>=4.66")]
    assert unmet_requirements(reqs, {"transformers": "5.24.0"}) == [
        "transformers<5.24,>=4.50 (lock: 5.24.0)", "tqdm>=4.66 (lock: None)"]
