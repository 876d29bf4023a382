"""The targets the benchmark checks: the notebook's epoch against the machine's bare training
steps, and the accuracy each setting must keep.

Every figure compared comes from one run of benchmarks.benchmark on one machine.
"""

import statistics

from benchmarks import budgets, common, roofline
from workbench.speed import mode_of

# The notebook settings measured: run label and the roofline's name of its network.
NOTEBOOK_SETTINGS = {"ours": "default", **{name: f"< {name}" for name in budgets.SETTINGS}}
# The notebook's training epoch may take at most this many times the fastest bare-step epoch.
EPOCH_RATIO_TARGET = 1.10
# Accuracy each setting must keep (%): its 5-seed medians, and the lowest of the last 3 epochs.
ACCURACY_TARGETS = {
    "ours": dict(final_acc_median=99.65, tta_acc_median=99.65),
    "20k": dict(final_acc_median=99.55),
    "8k": dict(final_acc_median=99.50, lowest_of_last_3_epochs=99.40),
}


def speed_summary(records, found_roofline):
    """Per notebook setting: its training epoch against whole epochs of bare steps of its network.

    The notebook's epoch is the median `train_time_s` over every epoch of every seed (a compiled
    run compiles before its first epoch, in the seconds of choosing its mode). The bare-step
    epochs were timed right before and after each run (`bare_epoch_s`, their mean: the same
    minutes of the machine) in the mode the roofline found fastest, and after it in the mode
    "auto" chose; their median over the runs is compared. Beside it, the roofline's median step
    times the steps of an epoch, as earlier benchmarks compared.
    """
    result = {}
    for label, setting in NOTEBOOK_SETTINGS.items():
        mine = [r for r in records if r["label"] == label]
        if not mine:
            continue
        fastest = roofline.fastest_mode(found_roofline, setting)
        chosen = [mode_of(r["speed"]).name for r in mine]
        epoch = common.median_epoch_train_s(mine)
        bare = statistics.median(r["bare_epoch_s"][fastest] for r in mine)
        bare_chosen = statistics.median(
            r["bare_epoch_s"][mode] for r, mode in zip(mine, chosen, strict=True)
        )
        from_steps = found_roofline["models"][setting]["modes"][fastest]["epoch_of_steps_s"]
        result[setting] = dict(
            notebook_epoch_s=epoch,
            fastest_bare_mode=fastest,
            fastest_bare_epoch_s=bare,
            ratio_to_fastest=epoch / bare,
            ratio_to_fastest_by_run=[
                statistics.median(common.history(r)["train_time_s"]) / r["bare_epoch_s"][fastest]
                for r in mine
            ],
            modes_chosen={mode: chosen.count(mode) for mode in sorted(set(chosen))},
            ratio_to_mode_chosen=epoch / bare_chosen,
            bare_epoch_from_median_step_s=from_steps,
            ratio_to_median_step=epoch / from_steps,
            choosing_s_median=statistics.median(r["speed"].get("seconds", 0.0) for r in mine),
            first_epoch_s_median=statistics.median(
                common.history(r)["train_time_s"][0] for r in mine
            ),
        )
    return result


def check(summary, budget_summary, speed):
    """Each target of the issue: {name: {value, target, met}}."""
    found = {}
    for setting, figures in speed.items():
        found[f"{setting}: notebook epoch / fastest bare-step epoch"] = dict(
            value=figures["ratio_to_fastest"],
            target=f"<= {EPOCH_RATIO_TARGET}",
            met=figures["ratio_to_fastest"] <= EPOCH_RATIO_TARGET,
        )
    sources = {"ours": summary.get("ours"), **budget_summary}
    for label, wanted in ACCURACY_TARGETS.items():
        if sources.get(label) is None:
            continue
        for key, least in wanted.items():
            value = sources[label][key]
            found[f"{label}: {key}"] = dict(value=value, target=f">= {least}", met=value >= least)
    return found


def markdown_table(speed):
    """Each setting's notebook epoch against the bare steps of its network (docs/results.md)."""
    rows = [
        [
            setting,
            ", ".join(f"{mode} ({n})" for mode, n in figures["modes_chosen"].items()),
            f"{figures['notebook_epoch_s']:.2f}",
            f"{figures['fastest_bare_mode']}, {figures['fastest_bare_epoch_s']:.2f}",
            f"{figures['ratio_to_fastest']:.2f}x",
            f"{figures['ratio_to_mode_chosen']:.2f}x",
            f"{figures['ratio_to_median_step']:.2f}x",
        ]
        for setting, figures in speed.items()
    ]
    header = [
        "network",
        '"auto" chose (seeds)',
        "notebook epoch (s, median)",
        "fastest bare steps: mode, epoch (s, median)",
        "notebook / fastest",
        "notebook / bare steps in the mode chosen",
        "notebook / median bare step x steps",
    ]
    return common.markdown_table(header, rows, "llrlrrr")
