"""workbench.folders: a run folder's files written together, read back and checked."""

import errno
import io
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from fakes import AS_SET, fake_run
from model import MAX_WIDTH, MNISTNet, count_parameters
from workbench import folders, runs, schema


def history_of(accuracies):
    """The history the training cell keeps after len(accuracies) epochs."""
    return {
        key: [acc if key == "test_acc" else 1.0 for acc in accuracies] for key in schema.METRIC_KEYS
    }


def save(run_dir, model, accuracies, planned=12):
    """Save epoch len(accuracies) as the training cell does, its history in resume.pt too."""
    history = history_of(accuracies)
    folders.save_epoch(run_dir, history, model, planned, resume_state={"history": history})


def new_run(params, model):
    return folders.create(
        params["OUTPUT_DIR"], params, model, "cpu", None, resume_state={}, speed=AS_SET
    )


def contents(run_dir):
    """{file name: bytes} of everything in the run folder, temporaries included."""
    return {path.name: path.read_bytes() for path in run_dir.iterdir()}


def damage(path, change):
    """Write `change` (bytes) over the file, or apply it (a function) to the JSON it holds."""
    if isinstance(change, bytes):
        path.write_bytes(change)
    else:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=2))


# (file, what is done to it, what the error must name besides the file). Each is what a hand
# edit, a copy cut short or another program can leave; test_runs.py uses these too.
DAMAGE = [
    pytest.param("metrics.json", b"", "cannot be read (JSONDecodeError", id="empty"),
    pytest.param("metrics.json", b'{"epochs_done": 2, "hist', "cannot be read", id="truncated"),
    pytest.param("metrics.json", bytes(range(256)), "cannot be read", id="binary"),
    pytest.param(
        "metrics.json", b'{"epochs_done": 1, "epochs_planned": 2}', "lacks weights_sha256",
        id="missing-key",
    ),
    pytest.param(
        "metrics.json", lambda m: m.pop("weights_sha256"), "lacks weights_sha256", id="no-digest"
    ),
    pytest.param(
        "metrics.json", lambda m: m.update(history=[]), "gives history = []", id="history-list"
    ),
    pytest.param(
        "metrics.json", lambda m: m.update(history=None), "gives history = None", id="history-null"
    ),
    pytest.param(
        "metrics.json", lambda m: m["history"].update(test_acc="99"),
        "gives history.test_acc = '99'", id="test_acc-string",
    ),
    pytest.param(
        "metrics.json", lambda m: m["history"].update(test_acc=[None]),
        "gives history.test_acc = [None]", id="test_acc-null",
    ),
    pytest.param(
        "metrics.json", lambda m: m["history"].update(test_acc=[float("nan")]),
        "gives history.test_acc = [nan]", id="test_acc-nan",
    ),
    pytest.param(
        "metrics.json", lambda m: m["history"].update(test_acc=[100.5]),
        "an accuracy outside 0-100%", id="test_acc-over-100",
    ),
    pytest.param(
        "metrics.json", lambda m: m["history"].update(epoch_time_s=[None]),
        "gives history.epoch_time_s = [None]", id="epoch_time_s-null",
    ),
    pytest.param(
        "metrics.json", lambda m: m.update(epochs_done=2), "not 2 finite numbers (epochs_done)",
        id="history-shorter-than-epochs_done",
    ),
    pytest.param(
        "metrics.json", lambda m: m.update(final_test_acc="99.5"),
        "gives final_test_acc = '99.5'", id="final_test_acc-string",
    ),
    pytest.param("params.json", b"[1, 2]", "holds a list, not an object", id="not-a-dict"),
    pytest.param(
        "params.json", lambda p: p.update(parameter_count="many"),
        "gives parameter_count = 'many'", id="parameter_count-string",
    ),
    pytest.param(
        "params.json", lambda p: p["parameters"].update(DROPOUT="0.1"), "gives DROPOUT = '0.1'",
        id="DROPOUT-string",
    ),
    pytest.param(
        "params.json", lambda p: p["parameters"].update(DROPOUT=1.5), "gives DROPOUT = 1.5",
        id="DROPOUT-out-of-range",
    ),
    pytest.param("params.json", lambda p: p.pop("speed"), "lacks speed", id="no-speed"),
    pytest.param(
        "params.json", lambda p: p["speed"].update(precision="fp16"), "gives speed = ",
        id="speed-unknown-precision",
    ),
    pytest.param(
        "params.json", lambda p: p["parameters"].pop("DROPOUT"), "records no DROPOUT",
        id="DROPOUT-missing",
    ),
    pytest.param(
        "params.json", lambda p: p.update(started="not a date"), "gives started = 'not a date'",
        id="started-not-a-date",
    ),
    pytest.param(  # wider than MNISTNet builds: refused before it is tried
        "params.json", lambda p: p["parameters"].update(CHANNELS=[MAX_WIDTH + 1] * 4),
        f"gives CHANNELS = {[MAX_WIDTH + 1] * 4}", id="CHANNELS-giant",
    ),
]  # fmt: skip


class FrozenClock(datetime):
    """A clock stopped at one moment: every run starts within the same second."""

    @classmethod
    def now(cls, tz=None):
        return datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)


def test_every_run_gets_a_new_folder_even_within_a_second(params, model, monkeypatch):
    monkeypatch.setattr(folders, "datetime", FrozenClock)
    made = [new_run(params, model) for _ in range(3)]
    first = made[0].name
    assert first.startswith(f"{FrozenClock.now():%Y%m%d-%H%M%S}_")
    assert [folder.name for folder in made] == [first, f"{first}-2", f"{first}-3"]
    assert all((folder / folders.PARAMS_FILE).is_file() for folder in made)


def test_a_new_run_folder_records_the_parameters_and_where_the_run_came_from(params, model):
    resume_state = {"history": history_of([]), "step": 7}
    run_dir = folders.create(
        Path(params["OUTPUT_DIR"]), {**params, "OUTPUT_DIR": Path(params["OUTPUT_DIR"])}, model,
        "cpu", Path("elsewhere") / "20240101-000000_earlier", resume_state, AS_SET,
    )  # fmt: skip
    assert run_dir.parent == Path(params["OUTPUT_DIR"])
    info = json.loads((run_dir / folders.PARAMS_FILE).read_text())
    assert info["name"] == run_dir.name
    assert info["parameters"]["CHANNELS"] == json.loads(json.dumps(params["CHANNELS"]))
    assert info["parameters"]["OUTPUT_DIR"] == params["OUTPUT_DIR"]  # a path, stored as text
    assert info["parameter_count"] == count_parameters(model)
    assert info["continued_from"] == "20240101-000000_earlier"
    assert info["threads"] == torch.get_num_threads()
    assert info["torch"] == torch.__version__ and info["device"] == "cpu"
    assert datetime.fromisoformat(info["started"]).tzinfo is not None
    assert folders.read_params(run_dir) == info
    assert folders.read_resume(run_dir) == resume_state


def test_a_run_folder_is_named_by_its_widths_epochs_seed_and_smoke(params):
    channels = ((8, 8), (12, 12), 16, 12)
    model = MNISTNet(channels=channels)
    run_dir = new_run({**params, "CHANNELS": channels}, model)
    assert run_dir.name.endswith(f"_c8x8-12x12-16-12_ep{params['EPOCHS']}_seed{params['SEED']}")
    smoke = new_run({**params, "SMOKE": True, "EPOCHS": 2, "SEED": 5}, model)
    assert smoke.name.endswith("_ep2_seed5_smoke")


def test_a_run_with_no_finished_epoch_has_no_result_files(params, model):
    run_dir = new_run(params, model)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [folders.PARAMS_FILE, folders.RESUME_FILE]
    )
    run = folders.read_run(run_dir)
    assert run["metrics"] is None and run["path"] == run_dir
    assert not folders.is_whole(run_dir, 1)
    with pytest.raises(schema.RunFolderError, match="has no finished epoch yet") as info:
        folders.check_weights_match(run)
    assert f"RESUME = {str(run_dir)!r}" in str(info.value)


def test_each_epoch_saves_metrics_weights_and_resume_state_that_agree(params, model):
    run_dir = new_run(params, model)
    save(run_dir, model, [97.0])
    save(run_dir, model, [97.0, 98.5])
    run = folders.read_run(run_dir)
    metrics = run["metrics"]
    assert (metrics["epochs_done"], metrics["epochs_planned"]) == (2, 12)
    assert metrics["history"] == history_of([97.0, 98.5])
    weights = run_dir / folders.WEIGHTS_FILE
    assert metrics["weights_sha256"] == folders.sha256(weights)
    saved = torch.load(weights, weights_only=True)
    assert saved.keys() == model.state_dict().keys()
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(saved[key], tensor)
    assert folders.read_resume(run_dir) == {"history": history_of([97.0, 98.5])}
    folders.check_weights_match(run)
    assert folders.is_whole(run_dir, 2) and not folders.is_whole(run_dir, 1)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_files_follow_the_umask(params, model, umask):
    old = os.umask(umask)
    try:
        run_dir = fake_run(params, model, [99.0])
    finally:
        os.umask(old)
    for name in folders.FILES:
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_weights_with_nan_stop_the_run_and_keep_the_last_good_epoch(params, model):
    run_dir = new_run(params, model)
    save(run_dir, model, [90.0])
    before = contents(run_dir)
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN or inf after epoch 2, so they were not"):
        save(run_dir, model, [90.0, 10.0])
    assert contents(run_dir) == before
    assert folders.is_whole(run_dir, 1)


@pytest.mark.parametrize("name", [folders.METRICS_FILE, folders.WEIGHTS_FILE, folders.RESUME_FILE])
def test_a_read_only_file_stops_the_save_and_the_files_still_agree_on_the_epoch_before(
    params, model, name
):
    run_dir = new_run(params, model)
    save(run_dir, model, [90.0])
    before = contents(run_dir)
    x = torch.randn(2, 1, 28, 28)
    epoch_1 = model(x)
    # Atomic writes refuse a file without write bits, even as root, who could write it anyway.
    (run_dir / name).chmod(0o444)
    with torch.no_grad():
        model.fc.bias.add_(1)
    with pytest.raises(OSError) as info:
        save(run_dir, model, [90.0, 95.0])
    assert info.value.errno == errno.EACCES  # not [Errno None]: the cause's own errno
    message = str(info.value)
    assert message.startswith(f"[Errno {errno.EACCES}] Epoch 2 could not be saved in {run_dir} (")
    assert f"(PermissionError: {run_dir / name} is read-only, so it was not replaced." in message
    assert "its files still hold epoch 1, whole" in message
    assert message.endswith(f"RESUME = {str(run_dir)!r}.")
    assert contents(run_dir) == before  # no file replaced, no temporary left
    run = folders.read_run(run_dir)
    assert run["metrics"]["epochs_done"] == 1
    assert run["metrics"]["weights_sha256"] == folders.sha256(run_dir / folders.WEIGHTS_FILE)
    torch.testing.assert_close(runs.load_model(run_dir)(x), epoch_1)
    assert len(folders.read_resume(run_dir)["history"]["test_acc"]) == 1


def test_a_full_disk_while_torch_saves_stops_naming_the_file_and_keeps_the_epoch_before(
    params, model, monkeypatch
):
    run_dir = new_run(params, model)
    save(run_dir, model, [90.0])
    before = contents(run_dir)
    real_save = torch.save

    def save_onto_a_full_disk(obj, f, *args, **kwargs):
        if isinstance(f, io.BytesIO):  # the weights' bytes, made in memory
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04")  # the first bytes still fit
        # What torch.save raises when the file's write fails: its own error, the OSError behind.
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64") from (
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        )

    monkeypatch.setattr(folders.torch, "save", save_onto_a_full_disk)
    with pytest.raises(OSError) as info:
        save(run_dir, model, [90.0, 95.0])
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert message.startswith(f"[Errno {errno.ENOSPC}] Epoch 2 could not be saved in {run_dir} (")
    assert f"{os.strerror(errno.ENOSPC)} while writing {run_dir / folders.RESUME_FILE})" in message
    assert "its files still hold epoch 1, whole" in message
    assert message.endswith(f"RESUME = {str(run_dir)!r}.")
    assert contents(run_dir) == before
    assert folders.is_whole(run_dir, 1)
    assert len(folders.read_resume(run_dir)["history"]["test_acc"]) == 1


@pytest.fixture
def failing_fsync(monkeypatch):
    """fail(name, code): make flushing the temporary of run-folder file `name` to disk fail."""
    temporaries = {}
    real_mkstemp, real_fsync = tempfile.mkstemp, os.fsync

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        temporaries[fd] = Path(path).name
        return fd, path

    def fail(name, code):
        def fsync(fd):
            if temporaries.get(fd, "").startswith(f".{name}."):
                raise OSError(code, os.strerror(code))
            return real_fsync(fd)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(os, "fsync", fsync)

    return fail


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG], ids=["disk-full", "file-too-large"])
@pytest.mark.parametrize("name", [folders.RESUME_FILE, folders.WEIGHTS_FILE, folders.METRICS_FILE])
def test_a_file_that_cannot_be_written_leaves_all_three_of_the_epoch_before(
    params, model, failing_fsync, name, code
):
    run_dir = new_run(params, model)
    save(run_dir, model, [90.0])
    before = contents(run_dir)
    failing_fsync(name, code)
    with torch.no_grad():
        model.fc.bias.add_(1)
    with pytest.raises(OSError, match="Epoch 2 could not be saved in") as info:
        save(run_dir, model, [90.0, 95.0])
    assert info.value.errno == code
    assert str(info.value).startswith(f"[Errno {code}] Epoch 2 could not be saved in {run_dir}")
    assert f"(OSError: {os.strerror(code)} while writing {run_dir / name})" in str(info.value)
    assert str(info.value).endswith(f"RESUME = {str(run_dir)!r}.")
    assert contents(run_dir) == before  # every temporary written before it is gone too
    assert folders.is_whole(run_dir, 1)


@pytest.mark.parametrize("name", [folders.WEIGHTS_FILE, folders.METRICS_FILE])
def test_a_full_disk_while_writing_names_the_file_that_could_not_be_written(
    params, model, failing_fsync, name
):
    run_dir = new_run(params, model)
    save(run_dir, model, [90.0])
    failing_fsync(name, errno.ENOSPC)
    with pytest.raises(OSError, match="Epoch 2 could not be saved in") as info:
        save(run_dir, model, [90.0, 95.0])
    assert f"{os.strerror(errno.ENOSPC)} while writing {run_dir / name}" in str(info.value)


def test_a_first_epoch_that_cannot_be_saved_leaves_the_new_folder_as_it_was(
    params, model, failing_fsync
):
    run_dir = new_run(params, model)
    before = contents(run_dir)
    failing_fsync(folders.METRICS_FILE, errno.ENOSPC)
    with pytest.raises(OSError, match="Epoch 1 could not be saved") as info:
        save(run_dir, model, [90.0])
    assert "its files still hold no finished epoch, whole" in str(info.value)
    assert contents(run_dir) == before
    assert folders.read_run(run_dir)["metrics"] is None


def test_a_run_folder_removed_while_training_is_not_recreated(params, model):
    run_dir = fake_run(params, model, [90.0])
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()
    with pytest.raises(FileNotFoundError, match="moved or deleted while training"):
        save(run_dir, model, [90.0, 91.0])
    assert not run_dir.exists()


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_weights_that_are_not_the_ones_metrics_json_was_saved_with_are_refused(params, model, how):
    run_dir = fake_run(params, model, [99.0])
    weights = run_dir / folders.WEIGHTS_FILE
    if how == "replaced":  # a stop between two saves, or a file copied over it
        torch.save(MNISTNet().state_dict(), weights)
    else:
        weights.unlink()
    run = folders.read_run(run_dir)  # the JSON files alone are fine
    with pytest.raises(schema.RunFolderError, match="is not the weights file .* was saved with"):
        folders.check_weights_match(run)
    assert not folders.is_whole(run_dir, 1)


@pytest.mark.parametrize(("name", "change", "named"), DAMAGE)
def test_a_damaged_or_hand_edited_file_is_refused_naming_the_file_and_the_value(
    params, model, name, change, named
):
    run_dir = fake_run(params, model, [99.0])
    damage(run_dir / name, change)
    with pytest.raises(schema.RunFolderError) as info:
        folders.read_run(run_dir)
    message = str(info.value)
    assert message.startswith(f"{run_dir / name} ")
    assert named in message and "the run folder is damaged" in message
    assert not folders.is_whole(run_dir, 1)


def test_a_copied_run_folder_is_read_by_its_own_name(params, model):
    run_dir = fake_run(params, model, [98.0])
    copy = run_dir.rename(run_dir.with_name("my-best-run"))
    run = folders.read_run(copy)
    assert (run["name"], run["path"]) == ("my-best-run", copy)


def test_save_final_adds_end_of_run_figures_and_keeps_the_rest(params, model):
    run_dir = fake_run(params, model, [98.0, 99.0])
    before = folders.read_run(run_dir)["metrics"]
    folders.save_final(run_dir, final_test_acc=99.25, tta_shift=1)
    assert folders.read_run(run_dir)["metrics"] == {
        **before,
        "final_test_acc": 99.25,
        "tta_shift": 1,
    }
    folders.check_weights_match(folders.read_run(run_dir))


def test_save_final_refuses_a_damaged_metrics_file_and_leaves_it(params, model):
    run_dir = fake_run(params, model, [98.0])
    damage(run_dir / folders.METRICS_FILE, lambda m: m.update(history=None))
    before = contents(run_dir)
    with pytest.raises(schema.RunFolderError, match="gives history = None"):
        folders.save_final(run_dir, final_test_acc=99.0)
    assert contents(run_dir) == before


def test_each_resumption_is_added_to_params_json_in_order(params, model):
    run_dir = new_run(params, model)
    before = folders.read_params(run_dir)
    folders.note_resumed(run_dir, {"at_epoch": 1})
    folders.note_resumed(run_dir, {"at_epoch": 3})
    after = folders.read_params(run_dir)
    assert after["resumed"] == [{"at_epoch": 1}, {"at_epoch": 3}]
    assert {k: v for k, v in after.items() if k != "resumed"} == before


def test_leftover_temporaries_of_a_hard_stop_are_removed_and_nothing_else(params, model):
    run_dir = fake_run(params, model, [98.0])
    kept = contents(run_dir)
    for name in folders.FILES:
        (run_dir / f".{name}.abc123.tmp").write_bytes(b"half")
    (run_dir / "notes.tmp").write_text("mine")
    folders.remove_leftovers(run_dir)
    assert contents(run_dir) == {**kept, "notes.tmp": b"mine"}


def test_an_output_dir_too_long_for_a_runs_files_is_refused_as_the_run_starts(
    params, model, tmp_path
):
    """Its folder could be made but not the longest file in it (PATH_MAX): a raw "File name too
    long" at the first save, or at the end of the run for a plot."""
    limit = os.pathconf(tmp_path, "PC_PATH_MAX") - 66  # a run folder's name fits, its files not
    deep = tmp_path
    while len(str(deep)) < limit:
        deep /= "d" * min(200, limit - len(str(deep)))
    with pytest.raises(OSError) as info:
        new_run({**params, "OUTPUT_DIR": str(deep)}, model)
    assert info.value.errno == errno.ENAMETOOLONG
    assert str(info.value).endswith(
        "cannot be made in it (File name too long). Choose another OUTPUT_DIR (a shorter path, "
        "for a name too long)."
    )
    assert f"No run can be saved in OUTPUT_DIR = {str(deep)!r}: " in str(info.value)
    assert list(deep.iterdir()) == []  # no folder left behind


def test_an_output_dir_that_is_a_runs_folder_is_refused(params, model):
    """New runs went inside it, where the comparison of the runs beside it missed them."""
    run_dir = fake_run(params, model, [98.0])
    with pytest.raises(ValueError) as info:
        folders.check_output_dir(run_dir)
    assert str(info.value) == (
        f"OUTPUT_DIR = {str(run_dir)!r} is a run's folder (it holds params.json), and a new run's "
        f"folder goes inside OUTPUT_DIR: set OUTPUT_DIR to the folder that holds the runs, "
        f"{str(run_dir.parent)!r}, or set RESUME = {str(run_dir)!r} to go on with that run."
    )
    folders.check_output_dir(run_dir.parent)  # the folder of the runs is one
