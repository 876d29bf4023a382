"""The whole benchmark in one run on this machine: the notebook's epoch against the machine's bare
training steps, its speed and accuracy against two well-known baselines, and the parameter budgets.

    python -m benchmarks.benchmark            # the full run behind the README and the docs (~1 h)
    python -m benchmarks.benchmark --quick    # 1 seed, 2 epochs, baselines on 12,000 images
    python -m benchmarks.benchmark --profile  # torch.profiler's table of the training loop

Alone on the machine, in this order: the baselines (baselines.py), the roofline (roofline.py), then
S5.ipynb run by papermill once per seed with its defaults and each budget setting (budgets.py),
COMPILE and PRECISION "auto", each run between two epochs of bare steps of its network. Every
ratio compares figures of this one run on one CPU. Writes a JSON file (every run's record, the
summary, the targets, the provenance), a PNG of accuracy against wall time and, with the full run,
benchmarks/budgets.json.
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

import utils
from benchmarks import against, baselines, budgets, common, roofline
from workbench import speed
from workbench.mnist import prepare

RESULTS = common.REPO / "benchmarks" / "results.json"
RECORDED = common.REPO / "outputs" / "S5-benchmark.ipynb"  # the full run's first default run
TARGET_ACC, HIGH_ACC = 99.0, 99.5  # the "time to 99.0%" and "time to 99.5%" thresholds
IDLE_SHARE = 0.2  # others using more of the CPU than this as a model's runs start: not idle
MODELS = ("ours", *baselines.SETUPS)
# The notebook settings measured: run label and the roofline's name of its network.
NOTEBOOK_SETTINGS = {"ours": "default", **{name: f"< {name}" for name in budgets.SETTINGS}}
# The notebook's training epoch may take at most this many times the fastest bare-step epoch.
EPOCH_RATIO_TARGET = 1.10
# Accuracy each setting must reach (%): its 5-seed medians, its lowest seed, and the lowest of the
# last 3 epochs.
ACCURACY_TARGETS = {
    "ours": dict(final_acc_median=99.70, tta_acc_median=99.72, final_acc_min=99.62),
    "20k": dict(final_acc_median=99.60),
    "8k": dict(final_acc_median=99.52, lowest_of_last_3_epochs=99.40),
}
# Seconds COMPILE and PRECISION "auto" may spend choosing: a first run, on a cold cache, and later.
CHOOSING_TARGETS = dict(cold=5.0, warm=1.0)


def median_time_to(mine, target):
    """Median over seeds of the wall time to `target`, or None unless every seed reached it."""
    reached = [common.time_to(r, target) for r in mine]
    return statistics.median(reached) if None not in reached else None


def summarize(records):
    summary = {}
    for name in MODELS:
        mine = [r for r in records if r["label"] == name]
        if not mine:
            continue
        # Seconds per epoch of the full training split, also for runs on fewer images (--quick).
        per_epoch = [
            seconds * common.FULL_EPOCH / (r.get("train_images") or common.FULL_EPOCH)
            for r in mine
            for seconds in common.history(r)["train_time_s"]
        ]
        summary[name] = dict(
            parameter_count=mine[0]["parameter_count"],
            seeds=len(mine),
            epochs=[r["metrics"]["epochs_done"] for r in mine],
            epoch_train_s=statistics.median(per_epoch),
            run_wall_s=statistics.median(common.wall_times(r)[-1] for r in mine),
            time_to_99_s=median_time_to(mine, TARGET_ACC),
            time_to_99_5_s=median_time_to(mine, HIGH_ACC),
            **common.spread(map(common.final_acc, mine), "final_acc"),
            max_busy_share_at_start=max(
                (r["load_at_start"] or {}).get("busy_share") or 0 for r in mine
            ),
        )
        if tta := common.tta_accs(mine):  # with test-time augmentation, beside the plain one
            summary[name].update(common.spread(tta, "tta_acc"))
    ours = summary.get("ours")
    for name, base in [(n, summary[n]) for n in baselines.SETUPS if ours and n in summary]:
        summary[f"epoch_speedup_vs_{name}"] = base["epoch_train_s"] / ours["epoch_train_s"]
        if base["time_to_99_s"] and ours["time_to_99_s"]:
            summary[f"time_to_99_speedup_vs_{name}"] = base["time_to_99_s"] / ours["time_to_99_s"]
    return summary


def speed_summary(records, found_roofline):
    """Per notebook setting: its training epoch against whole epochs of bare steps of its network.

    The notebook's epoch is the median `train_time_s` over every epoch of every seed. The bare
    epochs were timed right before and after each run (`bare_epoch_s`, their mean: the same
    minutes of the machine) in the mode the roofline found fastest, and after it in the mode
    "auto" chose; their median over the runs is compared.
    """
    result = {}
    for label, setting in NOTEBOOK_SETTINGS.items():
        mine = [r for r in records if r["label"] == label]
        if not mine:
            continue
        fastest = roofline.fastest_mode(found_roofline, setting)
        chosen = [speed.mode_of(r["speed"]).name for r in mine]
        epoch = common.median_epoch_train_s(mine)
        bare = statistics.median(r["bare_epoch_s"][fastest] for r in mine)
        bare_chosen = statistics.median(r["bare_epoch_s"][m] for r, m in zip(mine, chosen))
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
            choosing_s_median=statistics.median(map(common.choosing_s, mine)),
            choosing_s_cold=common.choosing_s(mine[0]),  # a fresh cache, nothing known
            choosing_s_warm=statistics.median(map(common.choosing_s, mine[1:] or mine)),
            first_epoch_s_median=statistics.median(
                common.history(r)["train_time_s"][0] for r in mine
            ),
        )
    return result


def check_targets(summary, budget_summary, speed_figures, before=None):
    """Each target: {name: {value, target, met}}."""
    found = {}

    def at_most(name, value, most):
        found[name] = dict(value=value, target=f"<= {most}", met=value <= most)

    if before:
        at_most("default: whole notebook run / the code before's", before["wall_ratio"], 1.0)
    for cache, most in CHOOSING_TARGETS.items() if "default" in speed_figures else ():
        value = speed_figures["default"][f"choosing_s_{cache}"]
        at_most(f"default: choosing the mode, {cache} (s)", value, most)
    for setting, figures in speed_figures.items():
        name = f"{setting}: notebook epoch / fastest bare-step epoch"
        at_most(name, figures["ratio_to_fastest"], EPOCH_RATIO_TARGET)
    sources = {"ours": summary.get("ours"), **budget_summary}
    for label, wanted in ACCURACY_TARGETS.items():
        for key, least in wanted.items() if sources.get(label) else ():
            value = sources[label][key]
            found[f"{label}: {key}"] = dict(value=value, target=f">= {least}", met=value >= least)
    return found


def markdown_table(summary):
    rows = []
    for name in (name for name in MODELS if name in summary):
        s = summary[name]
        t99, t995 = (
            f"{s[key]:.0f} s" if s[key] else "not reached"
            for key in ("time_to_99_s", "time_to_99_5_s")
        )
        seeds = f"{s['seeds']} seed{'s' * (s['seeds'] > 1)}"
        epochs = "/".join(map(str, sorted(set(s["epochs"]))))
        accuracy = (
            f"{s['final_acc_median']:.2f}% ({s['final_acc_min']:.2f}-{s['final_acc_max']:.2f}"
        )
        rows.append((name, f"{s['parameter_count']:,}", epochs, f"{s['epoch_train_s']:.1f}",
                     t99, t995, f"{accuracy}, {seeds})"))  # fmt: skip
    header = (
        "model | parameters | epochs | s / training epoch | time to 99.0% | time to 99.5% | "
        "final test accuracy (median, min-max)"
    )
    return common.markdown_table(header, rows, "lrrrrrl")


def speed_table(speed_figures):
    """Each setting's notebook epoch against the bare steps of its network (docs/results.md)."""
    rows = [(setting, ", ".join(f"{mode} ({n})" for mode, n in f["modes_chosen"].items()),
             f"{f['notebook_epoch_s']:.2f}",
             f"{f['fastest_bare_mode']}, {f['fastest_bare_epoch_s']:.2f}",
             f"{f['ratio_to_fastest']:.2f}x", f"{f['ratio_to_mode_chosen']:.2f}x")
            for setting, f in speed_figures.items()]  # fmt: skip
    header = (
        'network | "auto" chose (seeds) | notebook epoch (s, median) | fastest bare steps: '
        "mode, epoch (s, median) | notebook / fastest | notebook / bare steps in the mode chosen"
    )
    return common.markdown_table(header, rows, "llrlrr")


def plot(records, path):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = {"ours": "tab:blue", "s5_template": "tab:orange", "pytorch_examples": "tab:green"}
    for name in MODELS:
        for i, r in enumerate(x for x in records if x["label"] == name):
            label = None if i else name  # one legend entry a model
            style = dict(marker="o", color=colors[name], alpha=0.5 if i else 0.9, label=label)
            ax.plot(common.wall_times(r), common.history(r)["test_acc"], **style)
    ax.axhline(TARGET_ACC, color="gray", linestyle="--", linewidth=1, label=f"{TARGET_ACC}%")
    # Epochs below 95% (the S5 template's first) fall off the bottom.
    ax.set(
        xlabel="wall time, training and test passes (s)",
        ylabel="test accuracy (%)",
        ylim=(95, 100),
        title="MNIST test accuracy against wall time, same machine, same run",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bracketed(found_roofline, steps, caches):
    """common.run_notebook, with an epoch of bare training steps of the run's network timed right
    before and right after each run, so that both stand in the same minutes of the machine: in the
    roofline's fastest mode before and after, and after only in the mode the run chose, if
    another. The record keeps them as `bare_epoch_s_around` ({mode: [before, after]}) and
    `bare_epoch_s` ({mode: their mean}); `steps` fewer than an epoch's are scaled up to one. Each
    setting's runs share a TorchInductor cache, empty before its first, in the folder `caches`."""

    def run(label, parameters, seed, data_dir, keep=None):
        setting = NOTEBOOK_SETTINGS[label]
        config = roofline.model_settings()[setting]
        fastest = roofline.fastest_mode(found_roofline, setting)
        around = {fastest: [roofline.epoch_seconds(config, fastest, steps)]}
        cache = caches / label
        record = common.run_notebook(
            label, parameters, seed, data_dir, compile_cache=cache, keep=keep
        )
        for mode in dict.fromkeys([fastest, speed.mode_of(record["speed"]).name]):
            around.setdefault(mode, []).append(roofline.epoch_seconds(config, mode, steps))
        record["bare_epoch_s_around"] = around
        record["bare_epoch_s"] = {mode: statistics.mean(times) for mode, times in around.items()}
        return record

    return run


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs: a few minutes")
    parser.add_argument("--profile", action="store_true", help="profile the training loop only")
    parser.add_argument("--smoke", action="store_true", help="SMOKE runs, uncompiled: it runs")
    common.add_run_options(parser)
    parser.add_argument("--epochs", type=int, help="EPOCHS of the notebook runs")
    parser.add_argument("--baseline-images", type=int, help="the baselines' images a split")
    settings = ["default", *budgets.SETTINGS]
    parser.add_argument("--only", choices=settings, nargs="+", default=settings)
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    parser.add_argument("--against", metavar="COMMIT", help="the default runs of older code too")
    args = parser.parse_args()
    matplotlib.use("Agg")  # the plot is only saved
    data_dir = utils.resolve_data_dir(args.data_dir)
    prepare(data_dir, download=False, subset=args.smoke)  # fail early, naming what is wrong
    speed.keep_freed_memory()  # as the notebook's training cell does
    # No choice of mode remembered and no compiled kernels cached: each network's first run
    # chooses as on a machine new to it.
    caches = Path(tempfile.mkdtemp(prefix="s5-caches-"))
    os.environ["S5_SPEED_CACHE"] = str(caches / "speed.json")
    if args.profile:
        return roofline.profile(data_dir)
    short = args.quick or args.smoke
    seeds = args.seeds[:1] if args.quick else args.seeds
    epochs = 2 if args.quick else args.epochs
    parameters = {"EPOCHS": epochs} if epochs else {}
    parameters.update({"SMOKE": True, "COMPILE": False} if args.smoke else {})  # no compiling
    train_images = args.baseline_images or (12_000 if args.quick else None)
    found, cpu = common.provenance(), common.cpu_identity()
    result = dict(provenance=found, quick=args.quick, notebook_parameters_changed=parameters)
    records = [
        baselines.train_run(name, data_dir, train_images, 1 if short else most, seeds[0], stop)
        for name, most, stop in (("pytorch_examples", 8, TARGET_ACC), ("s5_template", 2, None))
    ]
    quick = dict(steps=5, matmul_s=0.2, n=256) if short else dict(steps=60, matmul_s=3.0)
    result["roofline"] = roofline.measure(**quick, compile_too=not args.smoke)
    run_notebook = bracketed(result["roofline"], 20 if short else roofline.STEPS_PER_EPOCH, caches)
    before = against.worktree(args.against) if args.against else None
    full = not short and args.epochs is None and len(args.only) == 1 + len(budgets.SETTINGS)
    for i, seed in enumerate(seeds if "default" in args.only else ()):
        # The full run's first seed is the committed notebook's record (docs/results.md).
        keep = RECORDED if full and i == 0 else None
        records.append(run_notebook("ours", parameters, seed, data_dir, keep=keep))
        if before and i < against.SEEDS:  # the same seed, in the same minutes, with its own cache
            run = dict(repo=before, compile_cache=caches / "before")
            records.append(common.run_notebook("before", parameters, seed, data_dir, **run))
    budget_names = [name for name in budgets.SETTINGS if name in args.only]
    budget_records = budgets.run_settings(budget_names, seeds, data_dir, parameters, run_notebook)
    if common.cpu_identity() != cpu:
        raise SystemExit(
            f"The CPU changed during the run ({cpu} -> {common.cpu_identity()}): "
            "its figures are of two machines, so nothing was written."
        )
    result["runs"] = records = records[2:] + budget_records + records[:2]
    result["summary"] = summarize(records)
    result["budgets"] = budgets.summary_of(budget_records)
    result["speed"] = speed_summary(records, result["roofline"])
    result["against_before"] = against.compare(records)
    result["targets"] = check_targets(
        result["summary"], result["budgets"], result["speed"], result["against_before"]
    )
    result["before_commit"] = args.against
    common.save_json(result, args.out)
    if full and args.seeds == common.SEEDS and args.out == str(RESULTS):  # docs/budgets.md's table
        common.save_json(budgets.as_file(budget_records, found), budgets.RESULTS)
    if before:
        against.remove(before)
    png = args.out.removesuffix(".json") + ".png"
    plot(records, png)
    report(result)
    print(f"wrote {args.out} and {png}")


def report(result):
    """Print the tables, the ratios and the targets, and warn when the machine was not idle."""
    print(roofline.markdown_table(result["roofline"]))
    print(markdown_table(result["summary"]))
    if result["budgets"]:
        print(budgets.markdown_table(result["budgets"]))
    print(*(f"{k}: {v:.1f}x" for k, v in result["summary"].items() if "speedup" in k), sep="\n")
    print(speed_table(result["speed"]))
    if before := result["against_before"]:
        print(f"against {result['before_commit']}: whole notebook run (s)", before["before"])
        print("this code:", before["ours"])
    for name, target in result["targets"].items():
        state = "met" if target["met"] else "MISSED"
        print(f"{state:6} {name}: {target['value']:.3f} (target {target['target']})")
    models = {name: s for name, s in result["summary"].items() if isinstance(s, dict)}
    shares = {name: s["max_busy_share_at_start"] for name, s in models.items()}
    if busy := {name: share for name, share in shares.items() if share > IDLE_SHARE}:
        print(f"NOT IDLE: CPU share used by others as runs started {busy}; do not quote the times.")


if __name__ == "__main__":
    main()
