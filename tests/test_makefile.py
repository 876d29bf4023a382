"""`make run` as many users start it: at once, each keeping its own executed notebook."""

import os
import subprocess

from conftest import REPO

FAKE_PYTHON = """#!/bin/sh
# papermill stand-in: `python -m papermill IN OUT ...` writes OUT, slowly enough to overlap.
sleep 0.5
echo "$$: $@" > "$4"
"""


def test_runs_started_in_the_same_second_each_keep_their_executed_notebook(tmp_path):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, script in (("python", FAKE_PYTHON), ("jupyter", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    (bin_dir / ".installed").touch()
    notebooks = tmp_path / "notebooks"
    command = ["make", "-s", "-C", str(REPO), "run", f"VENV={tmp_path / 'venv'}",
               f"NOTEBOOKS={notebooks}"]  # fmt: skip
    makes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = [make.communicate(timeout=60)[0] for make in makes]
    assert [make.returncode for make in makes] == [0] * 8
    written = sorted(p for p in notebooks.glob("S5-*.ipynb"))
    assert len(written) == 8
    assert len({p.read_text().split(":")[0] for p in written}) == 8  # each from its own run
    assert all(f"Executed notebook: {notebooks}/S5-" in out for out in outputs)
    assert os.path.exists(notebooks / ".latest")
