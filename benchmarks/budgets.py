"""The notebook under the course's parameter budgets: fewer than 20,000 and fewer than 8,000
parameters, each a setting of the parameters cell, run on several seeds.

    python benchmarks/budgets.py                # both budgets, seeds 1-5
    python benchmarks/budgets.py --only 8k      # one of them
    python benchmarks/budgets.py --summarize    # the summary and table again, from the runs saved

Writes benchmarks/budgets.json (per-epoch records in the benchmark's run format, with the parameter
count, receptive field and provenance) and prints the README's table.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from notebook_runs import REPO, notebook_run, provenance

sys.path.insert(0, str(REPO))
import utils  # noqa: E402

# budget name: (the most parameters allowed, the parameters-cell values that select the setting).
SETTINGS = {
    "20k": (20_000, dict(CHANNELS=[[8, 12], [20, 20], 24, 28], EPOCHS=15, DROPOUT=0.0, ROTATION=5.0, SHIFT=0.05, ZOOM=0.05)),
    "8k": (8_000, dict(CHANNELS=[[8, 8], [12, 12], 16, 12], EPOCHS=15, DROPOUT=0.0, ROTATION=5.0, SHIFT=0.05, ZOOM=0.05)),
}


def make_params(values):
    """The PARAMS for `make run` that select a setting, e.g. -y 'CHANNELS: [8, 12, 16, 20]' -p EPOCHS 15."""
    return " ".join(
        f"-y '{name}: {value}'" if isinstance(value, list) else f"-p {name} {value}" for name, value in values.items()
    )


def summarize(name, records):
    finals = [r["epochs"][-1]["test_acc"] for r in records]
    tta = [r["tta_test_acc"] for r in records]
    last3 = [min(e["test_acc"] for e in r["epochs"][-3:]) for r in records]
    return dict(
        budget=SETTINGS[name][0], params=records[0]["params"], receptive_field=records[0]["receptive_field"],
        epochs=len(records[0]["epochs"]), seeds=[r["seed"] for r in records],
        final_acc_median=statistics.median(finals), final_acc_min=min(finals), final_acc_max=max(finals),
        lowest_of_last_3_epochs=min(last3),
        tta_acc_median=statistics.median(tta), tta_acc_min=min(tta), tta_acc_max=max(tta),
        epoch_train_s=statistics.median(e["train_s"] for r in records for e in r["epochs"]),
        make_params=make_params(SETTINGS[name][1]),
    )


def summary_of(runs):
    names = dict.fromkeys(r["name"] for r in runs)  # in the order they ran
    return {name: summarize(name, [r for r in runs if r["name"] == name]) for name in names}


def markdown_table(summary):
    rows = [
        "| budget | parameters | receptive field | epochs | final test accuracy: median (min-max) "
        "| lowest in the last 3 epochs | with TTA: median (min-max) | s / training epoch | `make run PARAMS=\"...\"` |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for name, s in summary.items():
        rows.append(
            f"| < {s['budget']:,} | {s['params']:,} | {s['receptive_field']}x{s['receptive_field']} | {s['epochs']} | "
            f"{s['final_acc_median']:.2f}% ({s['final_acc_min']:.2f}-{s['final_acc_max']:.2f}, {len(s['seeds'])} seeds) | "
            f"{s['lowest_of_last_3_epochs']:.2f}% | {s['tta_acc_median']:.2f}% ({s['tta_acc_min']:.2f}-"
            f"{s['tta_acc_max']:.2f}) | {s['epoch_train_s']:.1f} | `{s['make_params']}` |"
        )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=SETTINGS, nargs="+", default=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DATA_DIR, else ./data)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "budgets.json"))
    parser.add_argument("--summarize", action="store_true", help="recompute the summary of --out's runs; run nothing")
    args = parser.parse_args()
    if args.summarize:
        result = json.loads(Path(args.out).read_text())
        result["summary"] = summary_of(result["runs"])
        utils.save_json(result, Path(args.out))
        print(markdown_table(result["summary"]))
        return

    data_dir = utils.resolve_data_dir(args.data_dir)
    result = dict(provenance=provenance(), settings={name: SETTINGS[name][1] for name in args.only}, runs=[])
    for name in args.only:
        for seed in args.seeds:
            record = notebook_run(name, SETTINGS[name][1], seed, data_dir)
            result["runs"].append(record)
            print(f"{name} seed {seed}: {[e['test_acc'] for e in record['epochs']][-3:]}", flush=True)
    result["summary"] = summary_of(result["runs"])
    utils.save_json(result, Path(args.out))
    print(markdown_table(result["summary"]))


if __name__ == "__main__":
    main()
