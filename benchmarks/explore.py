"""Try a variant of the notebook's settings on several seeds and log every run.

    python benchmarks/explore.py "label smoothing 0.1" --seeds 1 2 3 4 5 -p LABEL_SMOOTHING 0.1

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label", help="what this variant changes, in words")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameters-cell value, as for papermill")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DATA_DIR, else ./data)")
    parser.add_argument("--log", default=str(LOG), help="JSON-lines file to append to")
    parser.add_argument("--keep", default=str(REPO / "outputs" / "explore"),
                        help="folder that keeps every run's folder (weights, metrics)")
    args = parser.parse_args()

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
                     load_average_at_start=record["load_average_at_start"], run=record["notebook"]["name"],
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
