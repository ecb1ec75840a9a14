"""The README's reliability table names a test for every claim: each named test must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = "## What is guaranteed, and the test that proves it"
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def claims_section() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    return readme[start : end if end != -1 else None]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_claim_names_a_test_that_exists() -> None:
    rows = [line for line in claims_section().splitlines() if line.startswith("| ") and "`tests/" in line]
    assert len(rows) >= 20, "the claims table lost its rows"
    missing = [
        f"{file}::{name}"
        for row in rows
        for file, name in TEST_REFERENCE.findall(row)
        if not (REPO_ROOT / file).is_file() or name not in defined_tests(REPO_ROOT / file)
    ]
    assert not missing, f"README names tests that do not exist: {missing}"
