"""The README's example of using the model from another notebook, run exactly as written."""

import re

import torch

import runs
from conftest import REPO
from model import MNISTNet
from test_runs import DEFAULTS


def readme_example():
    text = (REPO / "README.md").read_text()
    section = text.split("## Use the model from another notebook", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_on_the_best_run(tiny_root, tmp_path, monkeypatch, capsys):
    params = {**DEFAULTS, "OUTPUT_DIR": "outputs", "CHANNELS": (8, 12, 16, 20)}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_DATA_DIR", str(tiny_root))
    torch.manual_seed(0)
    model = MNISTNet(channels=params["CHANNELS"])
    run_dir = runs.start_run("outputs", params, model, "cpu")
    history = {key: [1.0] for key in runs.METRIC_KEYS}
    runs.save_epoch(run_dir, history, model, 12)
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    assert namespace["run_dir"] == run_dir
    assert re.fullmatch(r"\d+\.\d% of the first 40 test digits right\n", capsys.readouterr().out)
