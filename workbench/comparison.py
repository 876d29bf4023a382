"""Runs side by side: the table `runs.compare_runs` prints, and the curves it plots.

Works on the runs `runs.scan_runs` reads; importing this module does nothing.
"""

from pathlib import Path
from typing import Any

from workbench.parameters import CHANGE_NO_RESULT


def short(value: Any) -> str:
    """A value for a table or a folder name: (16, 32) -> "16-32"; ((8, 8), 12) -> "8x8-12"."""
    if isinstance(value, (list, tuple)):
        return "-".join(
            "x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in value
        )
    return str(value)


def varying(runs: list[dict[str, Any]]) -> list[str]:
    """The parameters whose values differ between `runs`, in the parameters cell's order."""
    names = dict.fromkeys(name for r in runs for name in r["parameters"])
    return [
        name
        for name in names
        if name not in CHANGE_NO_RESULT and len({repr(r["parameters"].get(name)) for r in runs}) > 1
    ]


def table(
    runs: list[dict[str, Any]],
    damaged: dict[Path, str] | None = None,
    refused: dict[Path, str] | None = None,
) -> str:
    """A plain-text table, one row per run, then one per damaged run folder.

    A damaged folder (`damaged`: {folder: why}) and a run whose weights the loaders refuse
    (`refused`: {run folder: why}) are marked in a last column, "note", and why follows the table,
    one line each: "<folder name>  damaged: <why>".
    """
    damaged, refused = damaged or {}, refused or {}
    names = varying(runs)
    header = ["run", *names, "parameters", "epochs", "final %", "best %", "time"]
    rows, notes = [], []
    for r in runs:
        m = r["metrics"]
        acc = m["history"]["test_acc"] if m else []
        rows.append(
            [
                r["name"],
                *(short(r["parameters"].get(name)) for name in names),
                f"{r['parameter_count']:,}",
                f"{m['epochs_done']}/{m['epochs_planned']}" if m else "0 (none finished)",
                f"{acc[-1]:.2f}" if acc else "-",
                f"{max(acc):.2f}" if acc else "-",
                f"{sum(m['history'].get('epoch_time_s', [])):.0f} s" if m else "-",
            ]
        )
        why = refused.get(r.get("path"))
        notes.append(("weights refused", r["name"], why) if why else None)
    for folder, why in damaged.items():
        rows.append([folder.name, *["-"] * (len(header) - 1)])
        notes.append(("damaged", folder.name, why))
    if any(notes):
        header.append("note")
        for row, note in zip(rows, notes):
            row.append(note[0] if note else "")
    rows.insert(0, header)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{name}  {kind}: {why}" for kind, name, why in filter(None, notes)]
    return "\n".join(lines)


def curves(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """{label: test accuracy per epoch} of every run with a finished epoch."""
    names = varying(runs)
    return {
        ", ".join([r["name"], *(f"{k}={short(r['parameters'].get(k))}" for k in names)]): r[
            "metrics"
        ]["history"]["test_acc"]
        for r in runs
        if r["metrics"]
    }
