"""The notebook under the course's parameter budgets: fewer than 20,000 and fewer than 8,000
parameters, each a setting of the parameters cell, run on several seeds by benchmarks.benchmark
(`--only 20k 8k` for these alone), which writes benchmarks/budgets.json and docs/budgets.md's table.
"""

from benchmarks import common

RESULTS = common.REPO / "benchmarks" / "budgets.json"
# Both budgets train the same way: networks this small underfit the default augmentation, so they
# halve it (and keep dropout off). COMPILE and PRECISION stay "auto": whether compiling pays
# differs from CPU to CPU (docs/results.md, "How close to the machine").
SMALL_NETWORK_TRAINING = dict(EPOCHS=15, DROPOUT=0.0, ROTATION=5.0, SHIFT=0.05, ZOOM=0.05)
# budget name: (the most parameters allowed, the parameters-cell values that select the setting).
SETTINGS = {
    "20k": (20_000, dict(CHANNELS=[12, [20, 20], 24, 28], **SMALL_NETWORK_TRAINING)),
    "8k": (
        8_000,
        dict(CHANNELS=[[8, 8], [12, 12], 16, 12], **SMALL_NETWORK_TRAINING, LABEL_SMOOTHING=0.0),
    ),
}


def run_settings(names, seeds, data_dir, extra=None, run=common.run_notebook):
    """Each setting of `names` on every seed, run by `run` (common.run_notebook or a wrapper of
    it); their records."""
    records = []
    for name in names:
        for seed in seeds:
            record = run(name, {**SETTINGS[name][1], **(extra or {})}, seed, data_dir)
            records.append(record)
            print(f"{name} seed {seed}: {common.history(record)['test_acc'][-3:]}", flush=True)
    return records


def make_params(values):
    """`make run` PARAMS selecting a setting: -y 'CHANNELS: [8, 12, 16, 20]' -p EPOCHS 15."""
    return " ".join(
        f"-y '{name}: {value}'" if isinstance(value, list) else f"-p {name} {value}"
        for name, value in values.items()
    )


def summarize(name, records):
    return dict(
        budget=SETTINGS[name][0],
        parameter_count=records[0]["parameter_count"],
        receptive_field=records[0]["receptive_field"],
        epochs=records[0]["metrics"]["epochs_done"],
        seeds=[r["seed"] for r in records],
        **common.spread(map(common.final_acc, records), "final_acc"),
        lowest_of_last_3_epochs=common.lowest_of_last(records, 3),
        **common.spread(common.tta_accs(records), "tta_acc"),
        epoch_train_s=common.median_epoch_train_s(records),
        make_params=make_params(SETTINGS[name][1]),
    )


def summary_of(records):
    names = dict.fromkeys(r["label"] for r in records)  # in the order they ran
    return {name: summarize(name, [r for r in records if r["label"] == name]) for name in names}


def as_file(records, found):
    """budgets.json's content: the runs, their summary, the settings they ran and where."""
    settings = {r["label"]: SETTINGS[r["label"]][1] for r in records}
    return dict(provenance=found, settings=settings, runs=records, summary=summary_of(records))


def markdown_table(summary):
    rows = [(f"< {s['budget']:,}", f"{s['parameter_count']:,}",
             f"{s['receptive_field']}x{s['receptive_field']}", s["epochs"],
             f"{s['final_acc_median']:.2f}% ({s['final_acc_min']:.2f}-{s['final_acc_max']:.2f}, "
             f"{len(s['seeds'])} seeds)", f"{s['lowest_of_last_3_epochs']:.2f}%",
             f"{s['tta_acc_median']:.2f}% ({s['tta_acc_min']:.2f}-{s['tta_acc_max']:.2f})",
             f"{s['epoch_train_s']:.1f}", f"`{s['make_params']}`")
            for s in summary.values()]  # fmt: skip
    header = (
        "budget | parameters | receptive field | epochs | final test accuracy: median "
        "(min-max) | lowest in the last 3 epochs | with TTA: median (min-max) | "
        's / training epoch | `make run PARAMS="..."`'
    )
    return common.markdown_table(header, rows, "lrrrlrlrl")
