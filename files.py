"""Files written safely: whole or not at all, never over a read-only file.

Every file the project writes (run folders, weights, unpacked data, benchmark results) goes
through `atomic_write`. Importing this module does nothing.
"""

import contextlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it to `path`.

    A crash or an interrupt never leaves a half-written file under the real name. The file gets
    the permissions the umask gives new files, and a read-only `path` is never replaced.
    """
    path = Path(path)
    if path.exists() and not path.stat().st_mode & 0o222:
        raise PermissionError(
            f"{path} is read-only, so it was not replaced. Make it writable (chmod u+w) "
            "to replace it, or write to another path."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C (SIGINT) until the block is done, so files written together stay a pair.

    Outside the main thread, where Python cannot handle signals, the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask


def save_json(data: Any, path: str | os.PathLike) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def one_line(err: BaseException) -> str:
    """The whole message of `err` on one line (a download error spans several)."""
    return " ".join(str(err).split())
