"""The project's layout: one topic per module, imports flowing one way, old names still working."""

import ast
import importlib
import warnings

import pytest

import utils
from conftest import REPO

MODULES = {path.stem: path for path in REPO.glob("*.py")} | {
    f"benchmarks.{path.stem}": path for path in REPO.glob("benchmarks/*.py")
}


def project_imports(path):
    """The project modules that the module at `path` imports at its top level."""
    imported = set()
    for node in ast.parse(path.read_text()).body:
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
    assert graph["model"] == set(), (
        "model.py must stand alone: from model import MNISTNet and nothing else"
    )


def test_no_module_outgrows_two_screens():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert "benchmarks.benchmark" in lengths
    assert lengths["utils"] <= 300
    assert {name: n for name, n in lengths.items() if n > 350} == {}


# Every public name utils.py and runs.py had before their helpers got modules of their own.
OLD_NAMES = {
    "utils": (
        "MNIST_MEAN", "MNIST_STD", "RAW_FILES", "ALL_RAW_FILES", "MNISTDataError",
        "CheckpointError", "DOWNLOAD_TIMEOUT_S", "resolve_data_dir", "raw_folder", "load_mnist",
        "ensure_mnist_files",
        "read_idx_file", "BatchRandomAffine", "train_transform", "test_transform", "MNISTBatches",
        "keep_batch", "get_data_loaders", "transforms_data", "set_seed", "get_device",
        "atomic_write", "current_umask", "save_weights", "save_json", "all_finite", "load_weights",
        "check_checkpoint_format", "unwrap_state_dict", "check_state_dict", "denormalize",
        "image_grid", "plot_samples", "finish", "CURVE_PANELS", "plot_curves", "epoch_axis",
        "cap_percent_axis", "predict", "shifted_views", "confusion_matrix", "per_class_accuracy",
        "plot_confusion_matrix", "misclassified", "plot_misclassified",
    ),
    "runs": (
        "PARAMS_FILE", "METRICS_FILE", "WEIGHTS_FILE", "METRIC_KEYS", "PARAMETER_RULES",
        "check_parameters", "check_writable", "start_run", "save_epoch", "save_final", "cpu_model",
        "git_commit", "read_run", "list_runs", "latest_run", "best_run", "load_model",
        "NOT_COMPARED", "compare_runs", "plot_runs",
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("module", "name"), [(m, n) for m, names in OLD_NAMES.items() for n in names]
)
def test_every_old_name_still_works_and_a_moved_one_says_where_it_went(module, name):
    module = importlib.import_module(module)
    if name in module.MOVED:
        new_home = importlib.import_module(module.MOVED[name])
        message = rf"{module.__name__}\.{name} has moved to {new_home.__name__}\.{name}"
        with pytest.warns(DeprecationWarning, match=message):
            assert getattr(module, name) is getattr(new_home, name)
    else:
        assert callable(getattr(module, name)) or name.isupper()


@pytest.mark.parametrize("module", OLD_NAMES)
def test_a_star_import_still_brings_every_old_name(module):
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exec(f"from {module} import *", namespace)
    assert set(OLD_NAMES[module]) <= namespace.keys()


def test_the_names_users_rely_on_import_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from model import MNISTNet  # noqa: F401
        from runs import best_run, compare_runs, latest_run, load_model  # noqa: F401
        from utils import get_data_loaders, transforms_data  # noqa: F401


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        utils.no_such_thing  # noqa: B018
