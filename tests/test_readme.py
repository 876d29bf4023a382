"""The README: its example of using the model, run exactly as written, its links, its figures."""

import re

import torch

from conftest import REPO
from fakes import fake_run
from model import MNISTNet, count_parameters
from notebook_cells import notebook_source

README = (REPO / "README.md").read_text()


def readme_example():
    section = README.split("## Use the model from another notebook", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_on_the_best_run(params, tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_DATA_DIR", str(tiny_root))
    torch.manual_seed(0)
    channels = (8, 12, 16, 20)
    run_dir = fake_run(
        {**params, "OUTPUT_DIR": "outputs"}, MNISTNet(channels), [99.0], CHANNELS=channels
    )
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    assert namespace["run_dir"] == run_dir
    assert re.fullmatch(r"\d+\.\d% of the first 40 test digits right\n", capsys.readouterr().out)


def test_every_link_in_the_readme_and_docs_reaches_a_file():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), (
                    f"{page.name} links to {target}, which is missing"
                )


def test_the_readme_fits_on_a_screen_and_links_every_docs_page():
    assert len(README.splitlines()) <= 160
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in README, f"the README does not link docs/{page.name}"


def test_the_parameter_count_quoted_is_the_default_networks(notebook_defaults):
    quoted = f"{count_parameters(MNISTNet(notebook_defaults['CHANNELS'])):,} parameters"
    cell = notebook_source("parameters").splitlines()
    assert quoted in next(line for line in cell if line.startswith("CHANNELS ="))
    assert f"a CNN of {quoted}" in README
