"""The shape of the code base: layers, no import circles, small files and functions, unique test names."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
PACKAGES = ("lau", "tasks", "flows", "cli", "bench", "infra", "dashboard")
# package -> what it must never import (the engine stays pure; orchestration layers point one way)
FORBIDDEN = {
    "lau": ("prefect", "mlflow", "boto3", "botocore", "dvc", "tasks", "flows", "cli", "bench", "dashboard"),
    "tasks": ("flows", "cli", "bench", "dashboard"),
    "flows": ("cli", "bench", "dashboard"),
    "dashboard": ("flows", "cli", "bench"),
}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES if (REPO / package).is_dir() for p in (REPO / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (top level or inside a function), except under TYPE_CHECKING.
    ``from package import submodule`` counts as importing the submodule, not the package's __init__."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names
                          if (REPO / node.module.replace(".", "/") / f"{alias.name}.py").is_file()}
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(node.module)
    return found


def project_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in source_files()}
    return {name: {m for m in imported_modules(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_layers_import_only_downwards() -> None:
    offences = []
    for path in source_files():
        package = module_name(path).split(".")[0]
        for imported in imported_modules(path):
            if imported.split(".")[0] in FORBIDDEN.get(package, ()):
                offences.append(f"{path.relative_to(REPO)} imports {imported}")
    assert not offences, "\n".join(offences)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_among_the_projects_modules() -> None:
    assert find_cycle(project_graph()) is None, " -> ".join(find_cycle(project_graph()) or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_files_and_functions_stay_small() -> None:
    offences = []
    for path in source_files():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_FILE_LINES:
            offences.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offences.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not offences, "\n".join(offences)


def test_test_file_names_are_unique_across_folders() -> None:
    """Two test_x.py in different folders stop the whole run at collection (`make test` fails)."""
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1], names.most_common(3)


@pytest.mark.parametrize("doc", ["README.md", *[str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")]])
def test_docs_link_only_inside_the_repository(doc: str) -> None:
    """Every relative link resolves to a file of the repo; nothing points at files outside it."""
    import re

    text = (REPO / doc).read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        resolved = ((REPO / doc).parent / target.split("#")[0]).resolve()
        if not resolved.exists() or REPO not in resolved.parents and resolved != REPO:
            broken.append(target)
    assert not broken, f"{doc}: {broken}"
    assert "CONTRACT.md" not in text and "DESIGN.md" not in text, f"{doc} points at files outside the repo"


def environment_reads_at_import(tree: ast.Module) -> list[int]:
    """Lines that read the environment while a module is imported: at its top level or in a class body
    (inside a function is at call time), including default values of function arguments."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    visit(default)
            return
        text = ast.unparse(node) if isinstance(node, (ast.Call, ast.Subscript)) else ""
        # a bare os.environ is a reference; setdefault at import is a default the fork server replays
        if text.startswith(("os.environ.", "os.environ[", "os.getenv(")) and not text.startswith("os.environ.setdefault("):
            found.append(node.lineno)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_module_reads_the_environment_at_import() -> None:
    """The environment is read when a command runs, not when a module is imported: a process that
    imported the code once (the tests' fork server, tests/warm_lau.py; a warm worker) runs each
    command with that command's environment."""
    offences = [f"{path.relative_to(REPO)}:{line}" for path in source_files()
                for line in environment_reads_at_import(ast.parse(path.read_text()))]
    assert not offences, offences


def test_the_import_time_finder_finds_one() -> None:
    tree = ast.parse("import os\nA = os.environ.get('X')\ndef f(y=os.getenv('Y'), e=os.environ):\n"
                     "    return os.environ['Z']\nclass C:\n    B = os.environ['B']\n")
    assert environment_reads_at_import(tree) == [2, 3, 6]
