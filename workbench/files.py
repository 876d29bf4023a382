"""Files written safely: whole or not at all, never over a read-only file.

Every file the project writes (run folders, weights, unpacked data, benchmark results) goes
through `atomic_write`, or `write_together` for files that must change as one. Importing this
module does nothing.
"""

import contextlib
import errno
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
    write_together({path: write})


def write_together(writers: dict[str | os.PathLike, Callable[[IO[bytes]], Any]]) -> None:
    """Write every file of `writers` ({path: write(file)}) whole, then rename them all into place.

    Nothing is replaced until every file is written, so a full disk, a file too large or a
    read-only file leaves all of them as they were; only a hard stop between the renames (each
    a single system call) can leave some new and some old, in the order given. Raises OSError
    naming the file that could not be written.
    """
    paths = {Path(path): write for path, write in writers.items()}
    for path in paths:
        if path.is_dir():
            raise IsADirectoryError(
                errno.EISDIR,
                f"{path} is a folder, so no file can be written in its place: give the path of a "
                "file (in that folder, or elsewhere)",
            )
        if path.exists() and not path.stat().st_mode & 0o222:
            raise PermissionError(
                errno.EACCES,
                f"{path} is read-only, so it was not replaced. Make it writable (chmod u+w) "
                "to replace it, or write to another path.",
            )
    written = {}
    try:
        for path, write in paths.items():
            written[path] = _write_temporary(path, write)
        for path, tmp in written.items():
            os.replace(tmp, path)
    finally:
        for tmp in written.values():
            tmp.unlink(missing_ok=True)  # a temporary left only when a rename was not reached


def _write_temporary(path: Path, write) -> Path:
    """A temporary file beside `path` holding what write(file) wrote, flushed to the disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp)
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = _os_error(err) if isinstance(err, Exception) else None  # Ctrl-C stays Ctrl-C
        if cause is not None:
            # Say which file; torch.save reports a full disk as RuntimeError("... unexpected
            # pos ..."), with the OSError only as its cause.
            raise OSError(cause.errno, f"{cause.strerror or cause} while writing {path}") from err
        raise
    return tmp


def _os_error(err: BaseException) -> OSError | None:
    """The OSError `err` is, or was raised from, if any."""
    while err is not None:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


# The Ctrl-Cs held back by the outermost interrupts_deferred block running now; None outside one.
_held: list[int] | None = None


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise it as KeyboardInterrupt.

    So files written together stay a pair, and what the notebook keeps in memory changes with
    them. A block inside another holds Ctrl-C back until the outer one is done. Outside the main
    thread, where Python cannot handle signals, the block runs as it is.
    """
    global _held
    if _held is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    _held = received
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _held = None
        if received:
            raise KeyboardInterrupt


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask


def json_writer(data: Any) -> Callable[[IO[bytes]], Any]:
    """What writes `data` as indented JSON into a file, for atomic_write and write_together."""
    return lambda f: f.write(json.dumps(data, indent=2).encode())


def one_line(err: BaseException) -> str:
    """The whole message of `err` on one line (a download error spans several)."""
    return " ".join(str(err).split())


def check_writable(
    folder: str | os.PathLike,
    name: str = "OUTPUT_DIR",
    fix: str = "Set OUTPUT_DIR to a folder you can write to.",
) -> None:
    """Create `folder` if needed and prove a file can be written there; ValueError naming the
    parameter `name` and ending with `fix` otherwise (a file in the way, a read-only mount, no
    permission)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        # "File exists" or "Not a directory" alone do not say which file is in the way.
        in_the_way = err.errno in (errno.EEXIST, errno.ENOTDIR)
        file = next((p for p in (folder, *folder.parents) if in_the_way and p.is_file()), None)
        where = f" {file} is a file, not a folder." if file else ""
        raise ValueError(
            f"{name} = {str(folder)!r} cannot be written "
            f"({type(err).__name__}: {err.strerror or err}).{where} {fix}"
        ) from err
