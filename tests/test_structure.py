"""The project's layout: one topic per module, imports flowing one way, old names still working."""

import ast
import warnings

import pytest

import runs
import utils
from conftest import REPO

MODULES = {path.stem: path for path in REPO.glob("*.py")}


def project_imports(path):
    """The project modules that the module at `path` imports at its top level."""
    imported = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module)
    return imported & MODULES.keys()


def test_imports_flow_one_way():
    graph = {name: project_imports(path) for name, path in MODULES.items()}

    def reaches(start, target, seen=()):
        return any(
            n == target or (n not in seen and reaches(n, target, (*seen, n))) for n in graph[start]
        )

    cycles = [name for name in graph if reaches(name, name)]
    assert cycles == [], f"modules that import themselves back through others: {cycles}"
    assert graph["model"] == set(), (
        "model.py must stand alone: from model import MNISTNet and nothing else"
    )


def test_no_module_outgrows_two_screens():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert lengths["utils"] <= 300
    assert {name: n for name, n in lengths.items() if n > 350} == {}


@pytest.mark.parametrize(
    ("module", "name"), [(utils, n) for n in utils.MOVED] + [(runs, n) for n in runs.MOVED]
)
def test_a_moved_name_still_works_and_says_where_it_went(module, name):
    new_home = __import__(module.MOVED[name])
    with pytest.warns(
        DeprecationWarning,
        match=rf"{module.__name__}\.{name} has moved to {new_home.__name__}\.{name}",
    ):
        old = getattr(module, name)
    assert old is getattr(new_home, name)


def test_the_names_users_rely_on_import_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from model import MNISTNet  # noqa: F401
        from runs import best_run, compare_runs, latest_run, load_model  # noqa: F401
        from utils import get_data_loaders, transforms_data  # noqa: F401


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        utils.no_such_thing  # noqa: B018
