"""Shared helpers of the spec tests: fixture discovery and expectation parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pyro.spec import load_vars_file

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _specs(folder: Path) -> list[Path]:
    """Spec fixtures in ``folder``; '<name>.vars.yaml' files are vars sidecars, not specs."""
    return sorted(p for p in folder.glob("*.yaml") if not p.name.endswith(".vars.yaml"))


VALID = _specs(SPECS / "valid")
INVALID = _specs(SPECS / "invalid")

_EXPECT = re.compile(r"^# expect: (?P<body>.*)$", re.MULTILINE)
_FIELD = re.compile(r"(?P<key>\w+)(?P<op>~?=)(?P<value>.*?)(?=\s+\w+~?=|$)")


@dataclass(frozen=True)
class Expectation:
    """One '# expect:' line: fields compared exactly (=) or by substring (~=)."""

    exact: dict[str, str]
    contains: dict[str, str]

    def matches(self, issue: dict[str, object]) -> bool:
        exact = all(str(issue.get(key)) == value for key, value in self.exact.items())
        return exact and all(value in str(issue.get(key)) for key, value in self.contains.items())


def expectations(path: Path) -> list[Expectation]:
    """The '# expect:' lines at the top of an invalid fixture."""
    found = []
    for match in _EXPECT.finditer(path.read_text(encoding="utf-8")):
        exact: dict[str, str] = {}
        contains: dict[str, str] = {}
        for field in _FIELD.finditer(match["body"]):
            target = contains if field["op"] == "~=" else exact
            target[field["key"]] = field["value"].strip()
        found.append(Expectation(exact, contains))
    return found


def sidecar_vars(path: Path) -> dict[str, object] | None:
    """The vars in '<name>.vars.yaml' next to a fixture, if there is one."""
    sidecar = path.with_name(path.stem + ".vars.yaml")
    if not sidecar.exists():
        return None
    return load_vars_file(sidecar)
