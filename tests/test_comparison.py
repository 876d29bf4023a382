"""workbench.comparison: the table and the curves of runs side by side, from the runs as read."""

import re
from pathlib import Path

import pytest

from workbench import comparison
from workbench.parameters import CHANGE_NO_RESULT


def run(name, accuracies=(), planned=4, count=1234, path=None, **parameters):
    """A run as runs.scan_runs reads it: no metrics before its first finished epoch."""
    metrics = None
    if accuracies:
        metrics = dict(
            epochs_done=len(accuracies),
            epochs_planned=planned,
            history={"test_acc": list(accuracies), "epoch_time_s": [2.5] * len(accuracies)},
        )
    parameters = {"EPOCHS": planned, "SEED": 1, "CHANNELS": [16, [32, 32], 64, 128], **parameters}
    return dict(
        name=name,
        parameters=parameters,
        parameter_count=count,
        metrics=metrics,
        path=path or Path(name),
    )


def cells(table):
    """The table's rows split at its columns, which the rule under the header marks."""
    header, rule, *rows = table.splitlines()
    columns = [m.span() for m in re.finditer("-+", rule)]
    return [[line[a:b].strip() for a, b in columns] for line in (header, *rows)]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ((16, 32, 64, 128), "16-32-64-128"),
        ([16, [32, 32], 64, 128], "16-32x32-64-128"),  # as JSON gives it back
        (((8, 8), (12, 12), 16, 12), "8x8-12x12-16-12"),
        (0.1, "0.1"),
        (None, "None"),
    ],
)
def test_short_writes_widths_as_folder_names_do(value, written):
    assert comparison.short(value) == written


def test_varying_names_what_differs_in_the_parameters_cells_order():
    runs = [run("a", SEED=1, DROPOUT=0.0), run("b", SEED=2, DROPOUT=0.1, EPOCHS=9)]
    assert comparison.varying(runs) == ["EPOCHS", "SEED", "DROPOUT"]
    assert comparison.varying(runs[:1]) == []


def test_a_parameter_one_run_lacks_differs():
    assert comparison.varying([run("a"), run("b", ZOOM=0.1)]) == ["ZOOM"]


@pytest.mark.parametrize("name", CHANGE_NO_RESULT)
def test_where_things_are_is_never_compared(name):
    runs = [run("a", **{name: "here"}), run("b", **{name: "there"})]
    assert comparison.varying(runs) == []
    assert cells(comparison.table(runs))[0][1] == "parameters"


def test_the_table_has_a_row_per_run_then_one_per_damaged_folder():
    runs = [
        run("first", [97.0, 99.25, 99.0], count=118202, SEED=1),
        run("second", [98.5], planned=2, SEED=22),
        run("third", SEED=3),
    ]
    damaged = {Path("out") / "broken": "out/broken/params.json cannot be read"}
    table = comparison.table(runs, damaged)
    rows = 2 + len(runs) + len(damaged)
    assert cells("\n".join(table.splitlines()[:rows])) == [
        ["run", "EPOCHS", "SEED", "parameters", "epochs", "final %", "best %", "time", "note"],
        ["first", "4", "1", "118,202", "3/4", "99.00", "99.25", f"{3 * 2.5:.0f} s", ""],
        ["second", "2", "22", "1,234", "1/2", "98.50", "98.50", f"{2.5:.0f} s", ""],
        ["third", "4", "3", "1,234", "0 (none finished)", "-", "-", "-", ""],
        ["broken", "-", "-", "-", "-", "-", "-", "-", "damaged"],
    ]
    assert table.splitlines()[rows:] == ["broken  damaged: out/broken/params.json cannot be read"]


def test_a_run_whose_weights_are_refused_is_noted_with_why():
    runs = [run("kept", [97.0], SEED=1), run("replaced", [98.0], SEED=2, path=Path("replaced"))]
    why = "replaced/mnist_net.pt is not the weights file replaced/metrics.json was saved with"
    table = comparison.table(runs, refused={Path("replaced"): why})
    assert [row[0::len(row) - 1] for row in cells("\n".join(table.splitlines()[:4]))] == [
        ["run", "note"], ["kept", ""], ["replaced", "weights refused"]
    ]  # fmt: skip
    assert table.splitlines()[4:] == [f"replaced  weights refused: {why}"]


def test_long_reasons_go_under_the_table_and_leave_its_columns_aligned():
    runs = [run("a-run-with-a-long-name", [97.0], SEED=1, path=Path("a")), run("b", [96.0], SEED=2)]
    table = comparison.table(runs, {Path("broken"): "x" * 300}, refused={Path("a"): "y" * 300})
    lines = table.splitlines()
    header, rule, *rows = lines[:5]
    columns = [m.span() for m in re.finditer("-+", rule)]
    for line in (header, *rows):
        assert len(line) <= len(rule)
        # Each cell lies within its column: the gaps between the columns stay blank.
        gaps = [line[end:start] for (_, end), (start, _) in zip(columns, columns[1:])]
        assert all(gap.strip() == "" for gap in gaps), line
    assert lines[5:] == [
        f"a-run-with-a-long-name  weights refused: {'y' * 300}",
        f"broken  damaged: {'x' * 300}",
    ]


def test_a_table_with_nothing_to_note_has_no_note_column():
    table = comparison.table([run("a", [97.0], SEED=1), run("b", SEED=2)])
    assert cells(table)[0][-1] == "time" and len(table.splitlines()) == 4


def test_the_table_of_damaged_folders_alone_still_has_its_header():
    table = comparison.table([], {Path("broken"): "why"})
    assert table.splitlines()[0].split() == [
        "run", "parameters", "epochs", "final", "%", "best", "%", "time", "note"
    ]  # fmt: skip
    assert table.splitlines()[-1] == "broken  damaged: why"


def test_curves_label_each_finished_run_by_name_and_what_differs():
    runs = [
        run("a", [97.0, 98.0], CHANNELS=[8, 12, 16, 20]),
        run("b", [96.0], CHANNELS=[[8, 8], 12, 16, 12]),
        run("c"),  # no finished epoch: no curve
    ]
    assert comparison.curves(runs) == {
        "a, CHANNELS=8-12-16-20": [97.0, 98.0],
        "b, CHANNELS=8x8-12-16-12": [96.0],
    }
    assert comparison.curves(runs[:1]) == {"a": [97.0, 98.0]}
