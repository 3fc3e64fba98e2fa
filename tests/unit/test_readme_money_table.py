"""The README's money-at-risk table names tests that exist, one row per failure the design covers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAILURES = [
    "Laptop closed", "Client killed mid-launch", "Enforcer down", "Enforcer failing", "Instance never joins the pool",
    "Pool idle", "Lease tag tampered", "Termination protection", "Lost fleet answer",
]


def money_table() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The money at risk, failure by failure", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Failure")]


def defined_test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names |= {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
    return names


def test_every_failure_has_a_row_with_a_bound_and_existing_tests():
    rows = money_table()
    for failure in FAILURES:
        (row,) = [r for r in rows if r.startswith(f"| {failure}")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 4 and "P" in cells[2], row
        named = re.findall(r"`(test_[a-z0-9_]+)`", cells[3])
        assert named, f"{failure}: no test named"
        missing = set(named) - defined_test_names()
        assert not missing, f"{failure}: no such test {sorted(missing)}"
