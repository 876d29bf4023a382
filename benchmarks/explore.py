"""Try a variant of the notebook's settings on several seeds and log every run.

    python -m benchmarks.explore "no dropout" --seeds 1 2 3 4 5 -p DROPOUT 0.0
    python -m benchmarks.explore --summary   # the log as a markdown table, one row per variant

Each run appends one line to benchmarks/exploration.jsonl: the run's record (benchmarks.common: the
label, the parameters changed, the seed, the parameter count and the run's metrics.json) and the
machine it ran on. The log is committed; benchmarks/exploration.md says what it shows.
"""

import argparse
import ast
import json
import statistics
from pathlib import Path

from benchmarks import common
from utils import resolve_data_dir

LOG = common.REPO / "benchmarks" / "exploration.jsonl"


def parse_value(text):
    """A Python literal (3, 0.1, [8, 12], True) else the text; a tuple as papermill writes it."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def summary_table(log):
    """One markdown row per variant of the log: its seeds' final accuracies and their median."""
    variants = {}
    for record in map(json.loads, filter(str.strip, Path(log).read_text().splitlines())):
        variants.setdefault(record["label"], []).append(record)
    rows = []
    for label, mine in variants.items():
        finals, tta = [common.final_acc(r) for r in mine], common.tta_accs(mine)
        seeds, accs = ", ".join(str(r["seed"]) for r in mine), ", ".join(f"{a:.2f}" for a in finals)
        epochs, lows = len(common.history(mine[0])["test_acc"]), common.lowest_of_last(mine)
        rows.append((label, f"{mine[0]['parameter_count']:,}", epochs, seeds, accs,
                     *(f"{x:.2f}" for x in (statistics.median(finals), lows)),
                     f"{statistics.median(tta):.2f}" if tta else "-",
                     f"{common.median_epoch_train_s(mine):.1f}"))  # fmt: skip
    header = (
        "variant | parameters | epochs | seeds | final test accuracy per seed | median | "
        "lowest of the last 3 epochs | with TTA (median) | s / training epoch (median)"
    )
    return common.markdown_table(header, rows, "lrrllrrrr")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("label", nargs="?", help="what this variant changes, in words")
    parser.add_argument("--summary", action="store_true", help="print the log as a table")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameters-cell value, as for papermill")  # fmt: skip
    common.add_run_options(parser)
    parser.add_argument("--log", default=str(LOG), help="JSON-lines file to append to")
    keep = str(common.REPO / "outputs" / "explore")
    parser.add_argument("--keep", default=keep, help="folder that keeps every run's folder")
    args = parser.parse_args()
    if args.summary:
        return print(summary_table(args.log))
    if not args.label:
        parser.error("give the variant a label, or use --summary")
    parameters = {name: parse_value(value) for name, value in args.p}
    data_dir, machine, finals = resolve_data_dir(args.data_dir), common.provenance(), []
    for seed in args.seeds:
        record = common.run_notebook(args.label, parameters, seed, data_dir, args.keep)
        with open(args.log, "a") as f:
            f.write(json.dumps({**record, "machine": machine}) + "\n")
        finals.append(common.final_acc(record))
        print(f"{args.label} seed {seed}: {finals[-1]:.2f}% after the last epoch", flush=True)
    print(
        f"{args.label}: median {statistics.median(finals):.2f}% over seeds {args.seeds} "
        f"(min {min(finals):.2f}, max {max(finals):.2f})"
    )


if __name__ == "__main__":
    main()
