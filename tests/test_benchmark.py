"""benchmarks/benchmark.py end to end on tiny data, and its summary arithmetic."""

import importlib.util
import json
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def benchmark():
    sys.path.insert(0, str(REPO / "benchmarks"))  # where the script finds notebook_runs
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "benchmarks" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(name, accuracies, seconds_per_epoch=10.0):
    epochs = [
        dict(epoch=i + 1, train_s=seconds_per_epoch, wall_s=seconds_per_epoch * (i + 1), test_loss=0.1, test_acc=acc)
        for i, acc in enumerate(accuracies)
    ]
    return dict(name=name, seed=1, params=1000, epochs=epochs)


def test_time_to_target_is_the_first_epoch_at_99(benchmark):
    assert benchmark.time_to_target(fake_run("ours", [98.5, 99.0, 98.9, 99.3])) == 20.0
    assert benchmark.time_to_target(fake_run("ours", [98.5, 98.9])) is None


def test_summary_takes_medians_over_seeds_and_ratios_against_the_baselines(benchmark):
    runs = [
        fake_run("ours", [99.1, 99.5], 2.0),
        fake_run("ours", [99.0, 99.6], 4.0),
        fake_run("ours", [98.0, 99.4], 3.0),
        fake_run("pytorch_examples", [98.0, 99.0], 30.0),
    ]
    summary = benchmark.summarize(runs)
    ours = summary["ours"]
    assert ours["final_acc_median"] == 99.5
    assert (ours["final_acc_min"], ours["final_acc_max"]) == (99.4, 99.6)
    assert ours["epoch_train_s"] == 3.0
    assert ours["time_to_99_s"] == 4.0  # 2 s, 4 s and 6 s to reach 99.0%
    assert ours["time_to_99_5_s"] is None  # one seed never reached 99.5%
    assert ours["first_epoch_acc_median"] == 99.0
    assert summary["epoch_speedup_vs_pytorch_examples"] == 10.0
    assert summary["time_to_99_speedup_vs_pytorch_examples"] == 15.0
    assert "s5_template" not in summary


def test_a_tiny_run_records_every_epoch_of_all_three(benchmark, tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", [
        "benchmark.py", "--data-dir", str(tiny_root), "--seeds", "5", "--epochs", "2", "--train-images", "64",
        "--template-epochs", "2", "--examples-epochs", "1", "--out", str(out),
    ])
    benchmark.main()
    result = json.loads(out.read_text())
    epochs = {r["name"]: [e["epoch"] for e in r["epochs"]] for r in result["runs"]}
    assert epochs == {"ours": [1, 2], "pytorch_examples": [1], "s5_template": [1, 2]}
    [ours] = [r for r in result["runs"] if r["name"] == "ours"]
    # "ours" is the notebook: its own params.json comes back with the seed and epochs asked for.
    assert ours["notebook"]["parameters"]["SEED"] == 5 and ours["notebook"]["parameters"]["EPOCHS"] == 2
    assert ours["params"] == 108_922 and ours["receptive_field"] == 38
    for key in ("created", "git_commit", "cpu", "threads", "torch", "load_at_start"):
        assert key in result["provenance"], key
    assert all(0 <= r["load_at_start"]["busy_share"] <= 1 for r in result["runs"])
    for run in result["runs"]:
        walls = [e["wall_s"] for e in run["epochs"]]
        assert walls == sorted(walls) and all(0 < e["train_s"] <= e["wall_s"] for e in run["epochs"])
        assert all(0 <= e["test_acc"] <= 100 for e in run["epochs"])
    assert result["summary"]["s5_template"]["params"] == 593_200
    assert out.with_suffix(".png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def budgets():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("budgets", REPO / "benchmarks" / "budgets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_budget_setting_stays_under_its_budget(budgets):
    from model import MNISTNet, count_parameters

    assert set(budgets.SETTINGS) == {"20k", "8k"}
    for name, (budget, values) in budgets.SETTINGS.items():
        model = MNISTNet(channels=values["CHANNELS"], dropout=values.get("DROPOUT", 0.2))
        assert count_parameters(model) < budget, name
        assert values["EPOCHS"] <= 15, name


def test_budget_settings_are_valid_notebook_parameters_and_documented(budgets, tmp_path):
    import runs
    from test_runs import DEFAULTS

    readme = (REPO / "README.md").read_text()
    notebook = (REPO / "S5.ipynb").read_text()
    for name, (_, values) in budgets.SETTINGS.items():
        runs.check_parameters({**DEFAULTS, **values, "OUTPUT_DIR": str(tmp_path)})
        assert f"make run PARAMS=\"{budgets.make_params(values)}\"" in readme, name
        # As the parameters cell writes it: ((8, 8), (12, 12), 16, 12), not papermill's lists.
        channels = tuple(tuple(c) if isinstance(c, list) else c for c in values["CHANNELS"])
        assert str(channels) in notebook, f"the parameters cell does not mention the {name} setting"


def test_the_recorded_budget_runs_are_these_settings_and_the_readme_shows_them(budgets):
    recorded = json.loads((REPO / "benchmarks" / "budgets.json").read_text())
    assert recorded["settings"] == {name: values for name, (_, values) in budgets.SETTINGS.items()}
    assert recorded["summary"] == budgets.summary_of(recorded["runs"])
    for name, summary in recorded["summary"].items():
        assert len(summary["seeds"]) >= 5 and summary["epochs"] <= 15, name
        assert summary["params"] < budgets.SETTINGS[name][0], name
    readme = (REPO / "README.md").read_text()
    for row in budgets.markdown_table(recorded["summary"]).splitlines()[2:]:
        assert row in readme, "README's budget table is not the one budgets.json gives"
