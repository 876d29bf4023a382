"""The whole benchmark in one run on this machine: how close the notebook's epoch comes to the
machine's bare training steps, how fast and accurate it is against two well-known baselines, and
the parameter budgets.

    python -m benchmarks.benchmark            # the full run behind the README and the docs (~1 h)
    python -m benchmarks.benchmark --quick    # 1 seed, 2 epochs, baselines on 12,000 images

In this order, alone on the machine: the baselines (benchmarks/baselines.py): the "S5 template"
this project descends from and pytorch/examples' mnist, re-implemented from their published
descriptions; the roofline (benchmarks/roofline.py: the bare training step of each setting's
network in every mode, fp32 and bf16, compiled or not); S5.ipynb executed with papermill once per
seed with its defaults and with each budget setting (benchmarks/budgets.py), COMPILE and PRECISION
left "auto", each run between two epochs of bare steps of its network in the roofline's fastest mode
(and one after it in the mode the run chose, if another). The notebook's numbers are its own, read
from the run folders it saves. Every ratio in the summary compares figures of this one run, on one
CPU: the file records which, and the run refuses to write it when the CPU it ends on is not the one
it started on.
Writes a JSON file (every run's record, the summary, the targets met, and where, when and with what
it ran), a PNG of test accuracy against wall time, and with the full run benchmarks/budgets.json.
"""

import argparse
import statistics
import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from benchmarks import baselines, budgets, common, roofline, targets
from utils import resolve_data_dir
from workbench.files import save_json
from workbench.mnist import prepare
from workbench.provenance import REPO, cpu_identity, machine_load, provenance
from workbench.speed import keep_freed_memory, mode_of

TARGET_ACC = 99.0  # the "time to 99.0%" threshold
HIGH_ACC = 99.5  # the "time to 99.5%" threshold
IDLE_SHARE = (
    0.2  # other processes using more of the CPU than this as a model's runs start: not idle
)


RESULTS = REPO / "benchmarks" / "results.json"
MODELS = ("ours", *baselines.SETUPS)
ALL = ("default", *budgets.SETTINGS)  # the notebook settings: its defaults and each budget


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
            first_epoch_acc_median=statistics.median(
                common.history(r)["test_acc"][0] for r in mine
            ),
            **common.spread(map(common.final_acc, mine), "final_acc"),
            max_busy_share_at_start=max(
                (r["load_at_start"] or {}).get("busy_share") or 0 for r in mine
            ),
        )
        tta = common.tta_accs(mine)
        if tta:  # the notebook's accuracy with test-time augmentation, beside the plain one
            summary[name].update(common.spread(tta, "tta_acc"))
    ours = summary.get("ours")
    for name in ("s5_template", "pytorch_examples"):
        if ours and name in summary:
            base = summary[name]
            summary[f"epoch_speedup_vs_{name}"] = base["epoch_train_s"] / ours["epoch_train_s"]
            if base["time_to_99_s"] and ours["time_to_99_s"]:
                summary[f"time_to_99_speedup_vs_{name}"] = (
                    base["time_to_99_s"] / ours["time_to_99_s"]
                )
    return summary


def markdown_table(summary):
    rows = []
    for name in MODELS:
        s = summary.get(name)
        if s is None:
            continue
        t99, t995 = (
            f"{s[key]:.0f} s" if s[key] else "not reached"
            for key in ("time_to_99_s", "time_to_99_5_s")
        )
        seeds = f"{s['seeds']} seed{'s' * (s['seeds'] > 1)}"
        rows.append(
            [
                name,
                f"{s['parameter_count']:,}",
                "/".join(map(str, sorted(set(s["epochs"])))),
                f"{s['epoch_train_s']:.1f}",
                t99,
                t995,
                f"{s['final_acc_median']:.2f}% "
                f"({s['final_acc_min']:.2f}-{s['final_acc_max']:.2f}, {seeds})",
            ]
        )
    header = [
        "model",
        "parameters",
        "epochs",
        "s / training epoch",
        "time to 99.0%",
        "time to 99.5%",
        "final test accuracy (median, min-max)",
    ]
    return common.markdown_table(header, rows, "lrrrrrl")


def plot(records, path):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = {"ours": "tab:blue", "s5_template": "tab:orange", "pytorch_examples": "tab:green"}
    for name in MODELS:
        for i, r in enumerate(x for x in records if x["label"] == name):
            ax.plot(
                common.wall_times(r),
                common.history(r)["test_acc"],
                marker="o",
                color=colors[name],
                alpha=0.9 if i == 0 else 0.5,
                label=name if i == 0 else None,
            )
    ax.axhline(TARGET_ACC, color="gray", linestyle="--", linewidth=1, label=f"{TARGET_ACC}%")
    ax.set_xlabel("wall time, training and test passes (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(95, 100)  # epochs below 95% (the S5 template's first) fall off the bottom
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    ax.set_title("MNIST test accuracy against wall time, same machine, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bracketed(found_roofline, steps):
    """common.run_notebook, with an epoch of bare training steps of the run's network timed right
    before and right after each run, so that both stand in the same minutes of the machine (whose
    speed drifts from one minute to the next): in the mode the roofline found fastest, before and
    after, and after only in the mode the run chose, if another. The record keeps them as
    `bare_epoch_s_around` ({mode: [before, after]}) and `bare_epoch_s` ({mode: their mean}).
    `steps` fewer than an epoch's are scaled up to one (--quick, --smoke)."""

    def run(label, parameters, seed, data_dir):
        setting = targets.NOTEBOOK_SETTINGS[label]
        config = roofline.model_settings()[setting]

        def bare_epoch(mode):
            return roofline.STEPS_PER_EPOCH / steps * roofline.epoch_seconds(config, mode, steps)

        fastest = roofline.fastest_mode(found_roofline, setting)
        around = {fastest: [bare_epoch(fastest)]}
        record = common.run_notebook(label, parameters, seed, data_dir)
        for mode in dict.fromkeys([fastest, mode_of(record["speed"]).name]):
            around.setdefault(mode, []).append(bare_epoch(mode))
        record["bare_epoch_s_around"] = around
        record["bare_epoch_s"] = {mode: statistics.mean(times) for mode, times in around.items()}
        return record

    return run


def check_idle(name):
    """Warn when the machine was busy as `name`'s runs start: their times would be too slow."""
    busy = machine_load()["busy_share"]
    if busy is not None and busy > IDLE_SHARE:
        warnings.warn(
            f"Other processes use {busy:.0%} of the CPU as the {name} runs start: "
            "their times will be "
            "slower than on an idle machine. Quote only figures from an idle run.",
            stacklevel=2,
        )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 seed, 2 epochs, baselines on 12,000 images: a few minutes",
    )
    common.add_run_options(parser)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="EPOCHS of the notebook runs (default: the notebook's)",
    )
    parser.add_argument(
        "--template-epochs",
        type=int,
        default=2,
        help="epochs of the S5 template (20 take over an hour on 2 cores)",
    )
    parser.add_argument(
        "--examples-epochs",
        type=int,
        default=8,
        help="at most this many pytorch/examples epochs; stops at 99.0%%",
    )
    parser.add_argument(
        "--train-images",
        type=int,
        default=None,
        help="train the baselines on the first N images only (default: all 60,000)",
    )
    parser.add_argument(
        "--only",
        choices=ALL,
        nargs="+",
        default=list(ALL),
        help="the notebook settings to run (default: all; the baselines always run)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="notebook runs with SMOKE = True (256 images a split) and a short uncompiled "
        "roofline: checks that it runs, on any data",
    )
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args()
    matplotlib.use("Agg")  # the plot is only saved

    data_dir = resolve_data_dir(args.data_dir)
    prepare(data_dir, download=False, subset=args.smoke)  # fail early, naming what is wrong
    seeds, template_epochs, examples_epochs = args.seeds, args.template_epochs, args.examples_epochs
    parameters = {} if args.epochs is None else {"EPOCHS": args.epochs}
    train_images = args.train_images
    if args.quick:
        seeds, template_epochs, examples_epochs = seeds[:1], 1, 1
        parameters = {"EPOCHS": 2}
        train_images = train_images or 12_000
    if args.smoke:
        parameters["SMOKE"] = True

    found, cpu = provenance(), cpu_identity()
    result = dict(provenance=found, quick=args.quick, notebook_parameters_changed=parameters)
    # The baselines first: they run in this process as their projects would, with glibc's malloc
    # as it is; the roofline and bare steps after them keep freed memory, as the notebook does.
    check_idle("pytorch_examples")
    baseline_records = [
        baselines.train_run(
            "pytorch_examples",
            data_dir,
            train_images,
            examples_epochs,
            seeds[0],
            stop_at=TARGET_ACC,
        )
    ]
    check_idle("s5_template")
    baseline_records.append(
        baselines.train_run("s5_template", data_dir, train_images, template_epochs, seeds[0])
    )
    keep_freed_memory()
    check_idle("roofline")
    short = args.quick or args.smoke
    result["roofline"] = roofline.measure(
        steps=5 if short else 60, matmul_s=0.2 if short else 3.0, compile_too=not args.smoke
    )
    run_notebook = bracketed(result["roofline"], 20 if short else roofline.STEPS_PER_EPOCH)
    records = []
    if "default" in args.only:
        check_idle("ours")
        records += [run_notebook("ours", parameters, seed, data_dir) for seed in seeds]
    budget_names = [name for name in budgets.SETTINGS if name in args.only]
    if budget_names:
        check_idle("budget")
        budget_records = budgets.run_settings(
            budget_names, seeds, data_dir, parameters, run=run_notebook
        )
        records += budget_records
    records += baseline_records
    if cpu_identity() != cpu:
        raise SystemExit(
            f"The CPU changed during the run ({cpu} -> {cpu_identity()}): its "
            "figures are of two machines, so nothing was written. Run the benchmark again."
        )
    result["runs"] = records
    result["summary"] = summarize(records)
    result["budgets"] = budgets.summary_of(budget_records) if budget_names else {}
    result["speed"] = targets.speed_summary(records, result["roofline"])
    result["targets"] = targets.check(result["summary"], result["budgets"], result["speed"])
    out = Path(args.out)
    save_json(result, out)
    full = not short and args.epochs is None and set(args.only) == set(ALL)
    if full and args.seeds == common.SEEDS and out == RESULTS:  # docs/budgets.md's table
        save_json(budgets.as_file(budget_records, found), budgets.RESULTS)
    plot(records, out.with_suffix(".png"))
    report(result)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def report(result):
    """Print the tables, the ratios and the targets, and warn when the machine was not idle."""
    print(roofline.markdown_table(result["roofline"]))
    print(markdown_table(result["summary"]))
    if result["budgets"]:
        print(budgets.markdown_table(result["budgets"]))
    for key, value in result["summary"].items():
        if "speedup" in key:
            print(f"{key}: {value:.1f}x")
    print(targets.markdown_table(result["speed"]))
    for name, target in result["targets"].items():
        state = "met" if target["met"] else "MISSED"
        print(f"{state:6} {name}: {target['value']:.3f} (target {target['target']})")
    busy = {
        name: s["max_busy_share_at_start"]
        for name, s in result["summary"].items()
        if isinstance(s, dict) and s["max_busy_share_at_start"] > IDLE_SHARE
    }
    if busy:
        print(
            f"NOT IDLE: CPU share used by others as runs started {busy}; "
            "do not quote the times above."
        )


if __name__ == "__main__":
    main()
