"""The README's example of using the model from another notebook, run exactly as written."""

import re

import torch

import utils
from conftest import REPO
from model import MNISTNet


def readme_example():
    text = (REPO / "README.md").read_text()
    section = text.split("## Use the model from another notebook", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tiny_root, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    utils.save_weights(MNISTNet(), tmp_path / "outputs" / "mnist_net.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_DATA_DIR", str(tiny_root))
    exec(compile(readme_example(), "README.md", "exec"), {})
    assert re.fullmatch(r"\d+\.\d% of the first 40 test digits right\n", capsys.readouterr().out)
