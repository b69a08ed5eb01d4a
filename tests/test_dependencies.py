"""pyproject.toml declares ranges, constraints.txt pins exact versions (issue #29): the two must agree.

Exact pins in the package metadata made tickerpulse impossible to install next to vLLM or TRL, so the package
asks for ranges and `scripts/bootstrap.sh` installs with `pip install -c constraints.txt` to get the versions
the tests ran with. These tests catch the drift: a pin outside its range, a dependency without a pin, an exact
pin creeping back into pyproject, or torch (chosen by TORCH_SPEC) getting constrained.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# The extras bootstrap installs here (`.ci/run`: EXTRAS=dev,stream,mlx); the others (track, hub, gguf) are not
# installed, so they have ranges but no pins.
PINNED_EXTRAS = ("dev", "stream", "mlx")
# The pins were frozen on this kind of machine; markers of other platforms do not apply to them.
LINUX = {"platform_system": "Linux", "sys_platform": "linux", "extra": ""}
# torch is the user's choice (CPU/CUDA/MPS build); CUDA builds pin sympy exactly, which drags mpmath along,
# and networkx is torch-only too. Constraining any of them would fight TORCH_SPEC.
UNPINNED = {"torch", "sympy", "mpmath", "networkx", "tickerpulse"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]


def _requirements(groups: tuple[str, ...] | None = None) -> list[tuple[str, Requirement]]:
    """(group, requirement) for the core list ("core") and the named extras (all extras when None)."""
    project = _project()
    extras = project["optional-dependencies"]
    out = [("core", Requirement(r)) for r in project["dependencies"]]
    for name in extras if groups is None else groups:
        out += [(name, Requirement(r)) for r in extras[name]]
    return out


def parse_constraints(text: str) -> dict[str, Version]:
    """Canonical name -> pinned version. Raises ValueError on anything but one `name==version` per line."""
    pins: dict[str, Version] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or req.marker or req.url:
            raise ValueError(f"constraints.txt:{lineno}: not an exact pin: {raw!r}")
        name = canonicalize_name(req.name)
        if name in pins:
            raise ValueError(f"constraints.txt:{lineno}: {req.name} pinned twice")
        pins[name] = Version(specs[0].version)
    return pins


@pytest.fixture(scope="module")
def pins() -> dict[str, Version]:
    return parse_constraints((ROOT / "constraints.txt").read_text("utf-8"))


def test_every_pin_satisfies_its_declared_range(pins: dict[str, Version]) -> None:
    bad = [f"{group}: {req} but constraints.txt pins {pins[canonicalize_name(req.name)]}"
           for group, req in _requirements()
           if canonicalize_name(req.name) in pins
           and not req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True)]
    assert not bad, "\n".join(bad)


def test_every_installed_direct_dependency_is_pinned(pins: dict[str, Version]) -> None:
    missing = [f"{group}: {req}" for group, req in _requirements(PINNED_EXTRAS)
               if (req.marker is None or req.marker.evaluate(LINUX))
               and canonicalize_name(req.name) not in UNPINNED | set(pins)]
    assert not missing, "no pin in constraints.txt for:\n" + "\n".join(missing)


def test_torch_and_its_own_dependencies_are_not_constrained(pins: dict[str, Version]) -> None:
    assert not UNPINNED & set(pins), f"constraints.txt must not pin {sorted(UNPINNED & set(pins))}"


def test_pyproject_declares_ranges_with_lower_bounds() -> None:
    """No exact pins (they break co-installation); every entry has a tested lower bound."""
    for group, req in _requirements():
        ops = {s.operator for s in req.specifier}
        assert not ops & {"==", "==="}, f"{group}: {req} is an exact pin; put the pin in constraints.txt"
        assert ops & {">=", "~=", ">"}, f"{group}: {req} has no lower bound"


def test_bootstrap_installs_with_the_constraints_and_hashes_them() -> None:
    """The stamp must change when the pins do, or an edited constraints.txt would never be installed."""
    script = (ROOT / "scripts" / "bootstrap.sh").read_text("utf-8")
    assert "CONSTRAINTS=${CONSTRAINTS-constraints.txt}" in script
    assert 'PIN=(-c "$CONSTRAINTS")' in script
    install = next(line for line in script.splitlines() if '-e ".[$EXTRAS]"' in line)
    assert "PIN[@]" in install
    stamp = next(line for line in script.splitlines() if line.startswith("deps=$(sha1sum"))
    assert "CONSTRAINTS" in stamp


def test_the_lowest_tested_versions_are_the_declared_floors() -> None:
    """constraints-lowest.txt records the floors that passed the low-version venv; pyproject must say the same."""
    lowest = parse_constraints((ROOT / "constraints-lowest.txt").read_text("utf-8"))
    floors = {canonicalize_name(req.name): {Version(s.version) for s in req.specifier if s.operator == ">="}
              for _, req in _requirements(())}
    assert {"transformers", "peft", "gguf", "llguidance", "accelerate", "safetensors", "pydantic", "fastapi",
            "numpy"} <= set(lowest)
    wrong = {name: (str(pin), sorted(map(str, floors.get(name, ())))) for name, pin in lowest.items()
             if floors.get(name) != {pin}}
    assert not wrong, f"constraints-lowest.txt pin vs pyproject floor: {wrong}"


@pytest.mark.parametrize("text, message", [
    ("numpy>=2\n", "not an exact pin"),
    ("numpy==2.*\n", "not an exact pin"),
    ("numpy==2.4.6; sys_platform == 'linux'\n", "not an exact pin"),
    ("numpy==2.4.6\nNumPy==2.4.5\n", "pinned twice"),
])
def test_parse_constraints_rejects_what_is_not_one_exact_pin(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_constraints(text)


def test_parse_constraints_reads_pins_and_skips_comments() -> None:
    pins = parse_constraints("# header\n\nvaderSentiment==3.3.2  # trailing\ntorch==2.13.0+cpu\n")
    assert pins == {"vadersentiment": Version("3.3.2"), "torch": Version("2.13.0+cpu")}
