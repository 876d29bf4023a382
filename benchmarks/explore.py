"""Try a variant of the notebook's settings on several seeds and log every run.

    python benchmarks/explore.py "no dropout" --seeds 1 2 3 4 5 -p DROPOUT 0.0
    python benchmarks/explore.py --summary   # the log as a markdown table, one row per variant

Each run appends one line to benchmarks/exploration.jsonl: the label, the parameters changed, the
seed, every epoch's test accuracy and times, the parameter count and the machine. The log is
committed, so no exploration is lost; benchmarks/exploration.md summarises it.
"""

import argparse
import ast
import json
import statistics
import sys
from pathlib import Path

from notebook_runs import REPO, notebook_run, provenance

sys.path.insert(0, str(REPO))
import utils  # noqa: E402

LOG = REPO / "benchmarks" / "exploration.jsonl"


def parse_value(text):
    """A Python literal (3, 0.1, [8, 12, 16, 20], True), else the text itself.

    Tuples become lists: papermill writes a list into the parameters cell, but a tuple as text.
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def summary_table(log):
    """One markdown row per variant of the log: its seeds' final accuracies and their median."""
    entries = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    variants = {}
    for entry in entries:
        variants.setdefault(entry["label"], []).append(entry)
    rows = [
        "| variant | parameters | epochs | seeds | final test accuracy per seed | median | lowest of the last 3 epochs "
        "| with TTA (median) | s / training epoch (median) |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, runs in variants.items():
        finals = [r["test_acc"][-1] for r in runs]
        tta = [r["tta_test_acc"] for r in runs if r.get("tta_test_acc") is not None]
        rows.append(
            f"| {label} | {runs[0]['params']:,} | {len(runs[0]['test_acc'])} | {', '.join(str(r['seed']) for r in runs)} | "
            f"{', '.join(f'{a:.2f}' for a in finals)} | {statistics.median(finals):.2f} | "
            f"{min(min(r['test_acc'][-3:]) for r in runs):.2f} | "
            f"{f'{statistics.median(tta):.2f}' if tta else '-'} | "
            f"{statistics.median(t for r in runs for t in r['train_s']):.1f} |"
        )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label", nargs="?", help="what this variant changes, in words")
    parser.add_argument("--summary", action="store_true", help="print the log as a markdown table and stop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameters-cell value, as for papermill")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DATA_DIR, else ./data)")
    parser.add_argument("--log", default=str(LOG), help="JSON-lines file to append to")
    parser.add_argument("--keep", default=str(REPO / "outputs" / "explore"),
                        help="folder that keeps every run's folder (weights, metrics)")
    args = parser.parse_args()
    if args.summary:
        print(summary_table(args.log))
        return
    if not args.label:
        parser.error("give the variant a label, or use --summary")

    parameters = {name: parse_value(value) for name, value in args.p}
    data_dir = utils.resolve_data_dir(args.data_dir)
    finals = []
    for seed in args.seeds:
        record = notebook_run(args.label, parameters, seed, data_dir, args.keep)
        entry = dict(label=args.label, changed=parameters, seed=seed, params=record["params"],
                     test_acc=[e["test_acc"] for e in record["epochs"]],
                     train_acc=[round(a, 2) for a in record["notebook"]["metrics"]["history"]["train_acc"]],
                     train_s=[round(e["train_s"], 2) for e in record["epochs"]],
                     wall_s=round(record["epochs"][-1]["wall_s"], 1), tta_test_acc=record["tta_test_acc"],
                     load_at_start=record["load_at_start"], run=record["notebook"]["name"],
                     machine=provenance())
        with open(args.log, "a") as f:
            f.write(json.dumps(entry) + "\n")
        finals.append(entry["test_acc"][-1])
        print(f"{args.label} seed {seed}: final {finals[-1]:.2f}%, last 3 {entry['test_acc'][-3:]}, "
              f"{statistics.median(entry['train_s']):.1f} s per training epoch", flush=True)
    print(f"{args.label}: median {statistics.median(finals):.2f}% over seeds {args.seeds} "
          f"(min {min(finals):.2f}, max {max(finals):.2f})")


if __name__ == "__main__":
    main()
