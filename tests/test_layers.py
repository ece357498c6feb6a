"""The house rules of imports (../DESIGN.md): no import cycle among emo's modules, counting the
function-local imports too, and arrows pointing down (data knows nothing of models or serving;
sample data never imports the webcam loop)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "emo"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """emo module -> the emo modules it imports (anywhere in the file)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]  # from emo import weights
                targets = [s for s in subs if s in modules] or [node.module]
            # The package itself is imported before any of its modules, whoever asks for it.
            found |= {t for t in targets if t in modules and t not in (name, "emo")}
        graph[name] = found
    return graph


def test_no_import_cycles():
    graph = imports()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


#: The one arrow from the runtime to the training side: a .ckpt opened with the train extra.
RUNTIME_TO_TRAINING = {("emo.inference.backends", "emo.models.backend")}
TRAINING = (
    "emo.models",
    "emo.data",
    "emo.report",
    "emo.cli",
    "emo.train",
    "emo.evaluate",
    "emo.distill",
    "emo.export",
)


def test_arrows_point_down():
    graph = imports()
    for name, deps in graph.items():
        if name.startswith("emo.data"):  # the data may use the runtime's preprocessing, no more
            assert not {d for d in deps if d.startswith(("emo.models", "emo.report"))}, name
            assert {d for d in deps if d.startswith("emo.inference")} <= {"emo.inference.preprocess"}, name
        if name.startswith("emo.samples"):
            assert "emo.inference.realtime" not in deps, name
        if name.startswith(("emo.inference", "emo.weights")):
            up = {d for d in deps if d.startswith(TRAINING)}
            assert {(name, d) for d in up} <= RUNTIME_TO_TRAINING, name
