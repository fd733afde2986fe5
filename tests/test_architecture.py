"""The shape of the package: no import cycle (imports inside functions count), lower layers never import higher
ones, and no module or script outgrows its size limit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


def _package_imports(repo_root: Path) -> dict[str, set[str]]:
    """module -> package modules it imports, counting imports inside functions (TYPE_CHECKING blocks aside)."""
    graph: dict[str, set[str]] = {}
    for path in (repo_root / "proteinmtp").rglob("*.py"):
        mod = ".".join(path.relative_to(repo_root).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("proteinmtp"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("proteinmtp"))
        graph[mod] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    todo, seen = [start], set()
    while todo:
        m = todo.pop()
        for d in graph.get(m, ()):
            if d == goal:
                return True
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return False


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    return [m for m in graph if _reaches(graph, m, m)]


def test_no_import_cycle_anywhere_in_the_package(repo_root):
    assert _cycles(_package_imports(repo_root)) == []


def test_the_cycle_finder_finds_a_cycle_made_inside_a_function(tmp_path):
    """The checker itself: an import inside a function that closes a loop is found."""
    pkg = tmp_path / "proteinmtp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from proteinmtp.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from proteinmtp.a import g\n")
    assert sorted(_cycles(_package_imports(tmp_path))) == ["proteinmtp.a", "proteinmtp.b"]


# lower layers and what they must never reach (directly or through another module)
LOWER = ("proteinmtp.constants", "proteinmtp.fileio", "proteinmtp.geometry", "proteinmtp.folding",
         "proteinmtp.metrics", "proteinmtp.structure", "proteinmtp.structure_writer", "proteinmtp.secondary",
         "proteinmtp.reconstruction", "proteinmtp.batching", "proteinmtp.pool", "proteinmtp.dataset")
MODEL_AND_UP = ("proteinmtp.model", "proteinmtp.heads", "proteinmtp.training", "proteinmtp.train_command",
                "proteinmtp.inference", "proteinmtp.evaluation", "proteinmtp.eval_cli", "proteinmtp.predict")
PIPELINE = ("proteinmtp.predict", "proteinmtp.inference", "proteinmtp.evaluation", "proteinmtp.eval_cli",
            "proteinmtp.eval_report", "proteinmtp.eval_scoring", "proteinmtp.train_command", "proteinmtp.training")


def test_geometry_structure_and_metrics_know_no_model(repo_root):
    graph = _package_imports(repo_root)
    assert graph["proteinmtp.geometry"] <= {"proteinmtp.constants"}
    for low in LOWER:
        for high in MODEL_AND_UP:
            assert not _reaches(graph, low, high), f"{low} reaches {high}"


def test_the_model_knows_no_pipeline(repo_root):
    graph = _package_imports(repo_root)
    for high in PIPELINE:
        assert not _reaches(graph, "proteinmtp.model", high), f"proteinmtp.model reaches {high}"


@pytest.mark.parametrize("kind,limit", [("module", 600), ("script", 150)])
def test_sizes(repo_root, kind, limit):
    files = (sorted((repo_root / "proteinmtp").rglob("*.py")) if kind == "module"
             else sorted(repo_root.glob("*.py")))
    assert files
    big = {str(f.relative_to(repo_root)): n for f in files if (n := len(f.read_text().splitlines())) > limit}
    assert big == {}, f"{kind}s over {limit} lines"
