"""S5.ipynb as people use it: JupyterLab in headless Chromium, Run > Run All Cells through the menu.

Needs Debian's chromium (/usr/bin/chromium, or $CHROMIUM) and Playwright's Python package, which
drives it; browsers downloaded by Playwright are never used. Skipped, with the reason, when chromium
is missing, unless S5_REQUIRE_BROWSER=1 (as .ci/run sets), which makes that a failure.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO
from notebook_cells import NOTEBOOK

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Chromium's own background traffic fails on a machine without internet, and slowly.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Read through the app object JupyterLab exposes with expose_app_in_browser: the notebook's
# cells, their outputs and the kernel's state, whichever cells are scrolled into view.
NOTEBOOK_STATE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    if (!panel || !panel.content || !panel.sessionContext.session) return null;
    const cells = panel.content.widgets.map(cell => cell.model.toJSON());
    return {
        kernel: panel.sessionContext.session.kernel?.status ?? null,
        dirty: panel.context.model.dirty,
        cells: cells.filter(cell => cell.cell_type === "code"),
    };
}"""


@pytest.fixture
def chromium():
    if not CHROMIUM.exists():
        if os.environ.get("S5_REQUIRE_BROWSER") == "1":
            pytest.fail(f"S5_REQUIRE_BROWSER=1 but {CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(
            f"{CHROMIUM} not found: apt-get install chromium (Debian's package) to run this test"
        )
    return CHROMIUM


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path, tiny_root):
    """JupyterLab on a free loopback port, serving a folder with S5.ipynb set up for a smoke run."""
    import papermill  # here, not at the top: it takes seconds, and the quick tier runs no test here

    root = tmp_path / "lab"
    root.mkdir()
    for module in REPO.glob("*.py"):  # the notebook imports utils, model and the workbench
        shutil.copy(module, root / module.name)
    shutil.copytree(REPO / "workbench", root / "workbench", ignore=shutil.ignore_patterns("__py*"))
    parameters = dict(
        DATA_DIR=str(tiny_root),
        OUTPUT_DIR=str(tmp_path / "outputs"),
        EPOCHS=2,
        BATCH_SIZE=32,
        SMOKE=True,
    )
    papermill.execute_notebook(
        NOTEBOOK, root / "S5.ipynb", parameters=parameters, prepare_only=True
    )
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path / "home"  # no settings, workspaces or kernels of the user's
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--ServerApp.root_dir={root}",
                f"--IdentityProvider.token={token}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ]
            + ["--allow-root"] * (os.geteuid() == 0),  # CI containers run as root
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"JupyterLab did not start: {log_path.read_text()}"
                        ) from None
                    time.sleep(0.5)
            yield dict(url=url, token=token, root=root, outputs=tmp_path / "outputs")
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def wait_for(page, predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = page.evaluate(NOTEBOOK_STATE)
        if state and predicate(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last state: {json.dumps(state)[:2000]}")


@pytest.mark.slow
def test_run_all_cells_in_jupyterlab(chromium, lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{lab['url']}/lab/tree/S5.ipynb?token={lab['token']}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            opened = wait_for(page, lambda s: s["kernel"] == "idle", 90, "the kernel to start")
            assert not opened["dirty"], "JupyterLab changed the notebook just by opening it"

            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            done = wait_for(
                page,
                lambda s: s["kernel"] == "idle" and all(c["execution_count"] for c in s["cells"]),
                240,
                "every cell to run",
            )
            page.screenshot(path=str(tmp_path / "jupyterlab.png"), full_page=True)
            visible_stderr = page.locator(
                '[data-mime-type="application/vnd.jupyter.stderr"]'
            ).count()
        finally:
            browser.close()

    outputs = [o for c in done["cells"] for o in c["outputs"]]
    assert [o for o in outputs if o["output_type"] == "error"] == []
    assert [o for o in outputs if o.get("name") == "stderr"] == []  # tqdm's bars would be here
    assert visible_stderr == 0
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    assert (tmp_path / "jupyterlab.png").stat().st_size > 50_000
    [run] = [p for p in lab["outputs"].iterdir() if (p / "metrics.json").is_file()]
    assert json.loads((run / "metrics.json").read_text())["epochs_done"] == 2
