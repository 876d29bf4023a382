"""The project's layout: the lesson at the top, the machinery in one package, imports one way."""

import ast
import fnmatch
import json

from conftest import REPO

MODULES = {path.stem: path for path in REPO.glob("*.py")} | {
    f"{path.parent.name}.{path.stem}": path
    for folder in ("workbench", "benchmarks")
    for path in (REPO / folder).glob("*.py")
}
# The seed's files: what a learner copies alone into a folder of their own.
SEED_FILES = ("model", "utils")
# What the project holds at the top: the notebook, its two modules, how to run it, and folders.
TOP_LEVEL = {
    "S5.ipynb", "model.py", "utils.py", "README.md", "requirements.txt", "requirements-dev.txt",
    "Makefile", "pyproject.toml", "docs", "tests", "benchmarks", "workbench",
}  # fmt: skip


def project_imports(path):
    """The project modules that the module at `path` imports (at its top or inside functions)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module)
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    return imported & MODULES.keys()


def test_imports_flow_one_way():
    graph = {name: project_imports(path) for name, path in MODULES.items()}

    def reaches(start, target, seen=()):
        return any(
            n == target or (n not in seen and reaches(n, target, (*seen, n))) for n in graph[start]
        )

    cycles = [name for name in graph if reaches(name, name)]
    assert cycles == [], f"modules that import themselves back through others: {cycles}"
    assert graph["model"] == set(), "model.py must stand alone"
    assert graph["utils"] == set(), "utils.py must stand alone"
    for name, imported in graph.items():
        if name.startswith("workbench."):
            assert not {i for i in imported if i.startswith("benchmarks")}, name


def ignored(name):
    """Whether .gitignore leaves out a top-level file or folder of this name (runs, caches, the
    virtual environment): what a checkout without .git, a downloaded zip, holds besides is no
    part of the project."""
    patterns = (REPO / ".gitignore").read_text().split()
    return any(fnmatch.fnmatch(name, p.rstrip("/")) for p in patterns if not p.startswith("#"))


def test_the_top_level_holds_the_lesson_and_the_rest_sits_in_folders():
    top = {p.name for p in REPO.iterdir() if not p.name.startswith(".") and not ignored(p.name)}
    assert top <= TOP_LEVEL, f"files at the top that belong in a folder: {top - TOP_LEVEL}"
    assert {"S5.ipynb", "model.py", "utils.py", "workbench"} <= top


def test_no_module_outgrows_two_screens():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert "workbench.session" in lengths and "benchmarks.benchmark" in lengths
    assert {name: n for name, n in lengths.items() if n > 350} == {}


def code_cells():
    cells = json.loads((REPO / "S5.ipynb").read_text())["cells"]
    return {c["id"]: "".join(c["source"]) for c in cells if c["cell_type"] == "code"}


def code_lines(source):
    return [line for line in source.splitlines() if line.strip()]


def test_the_notebook_reads_like_the_lesson():
    cells = code_cells()
    assert sum(len(code_lines(source)) for source in cells.values()) <= 160
    assert len(code_lines(cells["training"])) <= 30
    assert [cid for cid, source in cells.items() if "globals()" in source] == ["checks"]
    # train() and test() are the notebook's own, not imported.
    assert "def train(" in cells["train-test"] and "def test(" in cells["train-test"]
