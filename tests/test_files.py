"""workbench.files: files written whole or not at all, together, never over a read-only file."""

import errno
import json
import os
import signal

import pytest

from workbench import files

OLD = {"a.bin": b"old a", "b.bin": b"old b", "c.bin": b"old c"}


@pytest.fixture
def targets(tmp_path):
    """Three files with old contents, as a run folder holds before an epoch is saved."""
    for name, content in OLD.items():
        (tmp_path / name).write_bytes(content)
    return {name: tmp_path / name for name in OLD}


def contents(folder):
    """Every file in `folder`, temporaries included: {name: bytes}."""
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def writes(data):
    return lambda f: f.write(data)


def test_write_together_replaces_every_file(targets, tmp_path):
    files.write_together({path: writes(f"new {name}".encode()) for name, path in targets.items()})
    assert contents(tmp_path) == {name: f"new {name}".encode() for name in OLD}


def fails_half_way(error):
    def write(f):
        f.write(b"half of the new")
        raise error

    return write


def chained_disk_full(f):
    """What torch.save does on a full disk: its RuntimeError, the OSError only as the cause."""
    f.write(b"half of the new")
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as err:
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 64 vs 0") from err


@pytest.mark.parametrize("failing", ["a.bin", "b.bin", "c.bin"])
@pytest.mark.parametrize(
    "write, raised",
    [
        (fails_half_way(ValueError("a bug in the writer")), ValueError),
        (fails_half_way(KeyboardInterrupt()), KeyboardInterrupt),
        (chained_disk_full, OSError),
    ],
    ids=["error", "ctrl-c", "disk-full-chained"],
)
def test_write_together_replaces_all_or_none(targets, tmp_path, failing, write, raised):
    writers = {path: writes(b"new") for path in targets.values()}
    writers[targets[failing]] = write
    with pytest.raises(raised):
        files.write_together(writers)
    assert contents(tmp_path) == OLD  # every file as it was, no temporary left behind


def test_a_full_disk_is_an_os_error_naming_the_file(targets):
    path = targets["b.bin"]
    with pytest.raises(OSError) as info:
        files.write_together({targets["a.bin"]: writes(b"new"), path: chained_disk_full})
    assert info.value.errno == errno.ENOSPC
    assert f"{os.strerror(errno.ENOSPC)} while writing {path}" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_plain_os_error_while_writing_names_the_file(targets, tmp_path):
    """A full disk met by write(), flush() or fsync() raises an OSError without a file name."""
    path = targets["b.bin"]
    disk_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError) as info:
        files.write_together({targets["a.bin"]: writes(b"new"), path: fails_half_way(disk_full)})
    assert contents(tmp_path) == OLD
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)


def test_ctrl_c_while_a_writer_handles_an_os_error_stays_ctrl_c(tmp_path):
    def write(f):
        try:
            raise FileNotFoundError(errno.ENOENT, "a file the writer looked for")
        except OSError:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C pressed while the handler runs
            f.write(b"the handler goes on")

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(tmp_path / "a.bin", write)


def test_a_read_only_target_is_refused_before_anything_is_written(targets, tmp_path):
    targets["c.bin"].chmod(0o444)
    called = []

    def write(f):
        called.append(f.name)
        f.write(b"new")

    with pytest.raises(
        PermissionError, match=f"{targets['c.bin']} is read-only, so it was not"
    ) as info:
        files.write_together({path: write for path in targets.values()})
    assert info.value.errno == errno.EACCES  # the real reason, for a message built on it
    assert called == []
    assert contents(tmp_path) == OLD


def test_crash_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"a good checkpoint")
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(path, fails_half_way(KeyboardInterrupt()))
    assert contents(tmp_path) == {"w.pt": b"a good checkpoint"}  # no temporary file left


def test_atomic_write_makes_the_missing_folders(tmp_path):
    path = tmp_path / "run" / "plots" / "x.bin"
    files.atomic_write(path, writes(b"data"))
    assert path.read_bytes() == b"data"
    assert contents(path.parent) == {"x.bin": b"data"}


def test_json_written_atomically_round_trips_and_replaces_the_file_whole(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("an older, longer file that must not show through")
    data = {"test_acc": [98.5, 99.1], "name": "run", "nested": {"epochs_done": 2}}
    files.atomic_write(path, files.json_writer(data))
    assert json.loads(path.read_text()) == data
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert files.current_umask() == 0o027
        assert files.current_umask() == 0o027  # reading it left it as it was
        files.atomic_write(tmp_path / "w.pt", writes(b"weights"))
        files.atomic_write(tmp_path / "m.json", files.json_writer({}))
    finally:
        os.umask(old)
    assert (tmp_path / "w.pt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o640


def test_a_read_only_file_is_not_replaced(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"keep me")
    path.chmod(0o444)
    with pytest.raises(PermissionError, match="w.pt is read-only, so it was not replaced"):
        files.atomic_write(path, writes(b"new"))
    assert contents(tmp_path) == {"w.pt": b"keep me"}


def test_ctrl_c_while_files_are_written_together_waits_for_the_pair(tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), files.interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the two writes
        files.atomic_write(tmp_path / "second.json", files.json_writer({"second": True}))
    assert json.loads((tmp_path / "second.json").read_text()) == {"second": True}
    assert signal.getsignal(signal.SIGINT) is handler


def test_ctrl_c_in_a_block_inside_another_waits_for_the_outer_one(tmp_path):
    """Run.save_epoch holds Ctrl-C over folders.save_epoch, which holds it over its own files."""
    handler, done = signal.getsignal(signal.SIGINT), []
    with pytest.raises(KeyboardInterrupt), files.interrupts_deferred():
        with files.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            files.atomic_write(tmp_path / "inner.json", files.json_writer({"inner": True}))
        done.append("after the inner block")  # what the outer block keeps in step with the file
    assert done == ["after the inner block"]
    assert json.loads((tmp_path / "inner.json").read_text()) == {"inner": True}
    assert signal.getsignal(signal.SIGINT) is handler
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C is Ctrl-C again after the blocks
        os.kill(os.getpid(), signal.SIGINT)
        done.append("never reached")
    assert done == ["after the inner block"]


def test_one_line_joins_a_message_of_several_lines():
    err = RuntimeError("Error downloading x.gz:\nTried https://mirror/, got:\n  refused\n")
    assert files.one_line(err) == "Error downloading x.gz: Tried https://mirror/, got: refused"


def test_a_folder_in_the_place_of_a_file_is_refused_without_saying_to_remove_it(tmp_path):
    """A figure's path given as a folder (or ""): the error said to remove the folder."""
    with pytest.raises(IsADirectoryError) as info:
        files.atomic_write(tmp_path, writes(b"png"))
    assert str(info.value) == (
        f"[Errno {errno.EISDIR}] {tmp_path} is a folder, so no file can be written in its place: "
        "give the path of a file (in that folder, or elsewhere)"
    )
    assert contents(tmp_path) == {}


@pytest.mark.parametrize("below", ["", "out"], ids=["the-file", "under-it"])
def test_a_file_in_the_way_of_a_folder_to_write_to_is_named(tmp_path, below):
    """Only "File exists" or "Not a directory" was said, not which file is in the way."""
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    folder = blocker / below if below else blocker
    with pytest.raises(ValueError) as info:
        files.check_writable(folder)
    message = str(info.value)
    assert message.startswith(f"OUTPUT_DIR = {str(folder)!r} cannot be written (")
    assert message.endswith(
        f"{blocker} is a file, not a folder. Set OUTPUT_DIR to a folder you can write to."
    )
