"""The import rules of the house: layers point down, no cycles, no import-time global state."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "emo").rglob("*.py"))


def test_import_contracts_hold():
    """pyproject.toml's import-linter contracts: the layers and no cycles (``lint-imports``)."""
    cli = pytest.importorskip("importlinter.cli")
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None) == 0


def _calls(tree: ast.AST, attr: str) -> list[int]:
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attr
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_backend_switch_and_every_local_emo_import_says_why(path):
    source = path.read_text()
    tree = ast.parse(source)
    # matplotlib.use() at import silently took the webcam window's backend away: figures are
    # matplotlib.figure.Figure objects, which need none.
    uses = [n for n in _calls(tree, "use") if "matplotlib" in source.splitlines()[n - 1]]
    assert not uses, f"matplotlib.use at lines {uses}"
    lines = source.splitlines()
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "emo":
                # a comment on the import's line, or on a line just above it (blocks of imports)
                above = lines[max(0, fn.lineno - 1) : node.lineno]
                assert any("#" in line for line in above), (
                    f"{path.name}:{node.lineno}: a function-local emo import needs a comment saying why"
                )
