"""Shared fixtures: tiny MNIST-format files, the real data when present, no network, the notebook's
defaults and a model (built by tests/fakes.py).

No PyTorch at the top of this file: xdist's controller process loads it and runs no test, and
PyTorch with torchvision take seconds to import. The fixtures that need it import tests/fakes.py.
"""

import contextlib
import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path

# The tests train on a few dozen images, where a second thread only adds its start and stop to
# every tensor operation (and on a busy machine, far more); the notebook's kernels and the runs in
# child processes inherit it. Set before PyTorch loads, which reads it once.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402

import notebook_cells

matplotlib.use("Agg")  # figures are only checked and saved, never shown

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def at_some(cases, fast=(0, -1)):
    """The cases of a test that proves one behaviour at every moment (every step, every save): the
    ones at the positions `fast` run in every tier, the rest are marked slow, so `make test-fast`
    proves it at the first and the last moment and `make test` at every one."""
    keep = {i % len(cases) for i in fast}
    return [
        case
        if i in keep
        else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow)
        for i, case in enumerate(cases)
    ]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A read-only-by-convention folder of tiny MNIST files shared by the tests."""
    from fakes import make_tiny_mnist  # imports PyTorch: see this file's docstring

    root = tmp_path_factory.mktemp("tiny_mnist")
    make_tiny_mnist(root)
    return root


def snapshot(root):
    """{path: (size, modification time)} of everything under `root`: what a write would change."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(root).rglob("*")}


def mount_read_only(monkeypatch, folder):
    """Files made in `folder` fail with EROFS, as on a read-only mount (root ignores file modes)."""
    real = tempfile.TemporaryFile

    def read_only_mount(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == Path(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_mount)


@contextlib.contextmanager
def read_only(root):
    """`root` and everything in it without write bits for the block, as CI's ../shared is."""
    mode = os.stat(root).st_mode
    for path in [root, *Path(root).rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        yield
    finally:
        for path in [root, *Path(root).rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        Path(root).chmod(mode)


@pytest.fixture
def tiny_copy(tiny_root, tmp_path):
    """A private copy of the tiny data that a test may damage."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root


def real_data_dir():
    """The folder holding real MNIST ($MNIST_DATA_DIR, else ../shared/data), or None."""
    for candidate in (os.environ.get("MNIST_DATA_DIR"), SHARED_DATA):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def real_data():
    root = real_data_dir()
    if root is None:
        if os.environ.get("MNIST_REQUIRE_REAL_DATA") == "1":
            pytest.fail(
                "MNIST_REQUIRE_REAL_DATA=1 but no real MNIST in $MNIST_DATA_DIR or ../shared/data"
            )
        pytest.skip("real MNIST not found: set MNIST_DATA_DIR or place it in ../shared/data")
    return root


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any attempt to resolve or reach a host but this one; the list records the attempts.

    Local (AF_UNIX) sockets stay allowed, as DataLoader workers pass tensors through them, and so
    does the loopback interface, where tests run servers of their own.
    """
    attempts = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is blocked in the tests")

    def local_only(sock, address):
        if sock.family == socket.AF_UNIX or address[0] in LOOPBACK:
            return connect(sock, address)
        return refuse(sock, address)

    def resolve_loopback_only(host, *args, **kwargs):
        if host in LOOPBACK:
            return getaddrinfo(host, *args, **kwargs)
        return refuse(host, *args)

    monkeypatch.setattr(socket, "getaddrinfo", resolve_loopback_only)
    monkeypatch.setattr(socket.socket, "connect", local_only)
    return attempts


@pytest.fixture(autouse=True)
def speed_choices(tmp_path, monkeypatch):
    """Each test remembers the modes COMPILE and PRECISION "auto" chose in a file of its own, never
    in the user's cache: a choice made by one test must not decide another's."""
    path = tmp_path / "speed-choices.json"
    monkeypatch.setenv("S5_SPEED_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def notebook_defaults():
    """The values the notebook's parameters cell defines, read from the cell itself."""
    return notebook_cells.notebook_defaults()


@pytest.fixture
def params(notebook_defaults, tmp_path):
    """The notebook's defaults, saving into a temporary OUTPUT_DIR."""
    return {**notebook_defaults, "OUTPUT_DIR": str(tmp_path / "outputs")}


@pytest.fixture
def model():
    """MNISTNet(), the notebook's default network: fixed initial weights, eval mode."""
    from fakes import default_model  # imports PyTorch: see this file's docstring

    return default_model()
