"""Train MNISTNet with the notebook's defaults and two well-known baselines on real MNIST,
side by side on this machine, and record speed and accuracy.

    python benchmarks/benchmark.py            # the full run behind the README table
    python benchmarks/benchmark.py --quick    # a few minutes: 1 seed, fewer epochs, 12,000 training images

Writes a JSON file (every epoch's wall time and test accuracy, plus a summary) and a PNG of
test accuracy against wall time. The baselines are re-implemented here from their published
descriptions: the "S5 template" this project descends from, and pytorch/examples' mnist.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402
from tqdm import tqdm  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import utils  # noqa: E402
from model import MNISTNet  # noqa: E402

TARGET_ACC = 99.0  # the "time to 99.0%" threshold


class S5TemplateNet(nn.Module):
    """The course template's CNN: four unpadded 3x3 convs, two max-pools, 4096 -> 50 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.conv4 = nn.Conv2d(128, 256, 3)
        self.fc1 = nn.Linear(4096, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(x)))), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


class ExamplesNet(nn.Module):
    """pytorch/examples' MNIST CNN: two 3x3 convs, a max-pool, dropout, 9216 -> 128 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(self.dropout1(x).flatten(1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def notebook_defaults():
    """The hyperparameters in S5.ipynb's parameters cell, so the benchmark cannot drift from it."""
    notebook = json.loads((REPO / "S5.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    params = {}
    exec("".join(cell["source"]), {}, params)
    return params


def pil_loaders(data_dir, train_images, train_transform, batch_size, test_batch_size, num_workers):
    """Per-image PIL loaders over torchvision's MNIST, as both baselines use them."""
    normalize = [transforms.ToTensor(), transforms.Normalize((utils.MNIST_MEAN,), (utils.MNIST_STD,))]
    train_set = datasets.MNIST(data_dir, train=True, transform=transforms.Compose(train_transform + normalize))
    if train_images is not None:
        train_set = Subset(train_set, range(min(train_images, len(train_set))))
    test_set = datasets.MNIST(data_dir, train=False, transform=transforms.Compose(normalize))
    common = dict(num_workers=num_workers, persistent_workers=num_workers > 0)
    return (
        DataLoader(train_set, batch_size=batch_size, shuffle=True, **common),
        DataLoader(test_set, batch_size=test_batch_size, shuffle=False, **common),
    )


def setup_ours(data_dir, train_images, epochs, seed):
    p = notebook_defaults()
    sizes = dict(batch_size=p["BATCH_SIZE"], test_batch_size=p["TEST_BATCH_SIZE"], data_dir=data_dir, seed=seed)
    train_loader, test_loader = utils.get_data_loaders(**sizes)
    if train_images is not None:
        # max_samples cuts both splits; keep the whole test split, as for the baselines.
        train_loader, _ = utils.get_data_loaders(**sizes, max_samples=train_images)
    model = MNISTNet()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=p["LEARNING_RATE"], momentum=p["MOMENTUM"], nesterov=True,
        weight_decay=p["WEIGHT_DECAY"],
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=p["LEARNING_RATE"], epochs=epochs, steps_per_epoch=len(train_loader),
        pct_start=p["WARMUP"],
    )
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(p["EMA_DECAY"]), use_buffers=True
    )
    return model, optimizer, scheduler, "batch", train_loader, test_loader, ema


def setup_s5_template(data_dir, train_images, epochs, seed):
    train_transform = [
        transforms.RandomApply([transforms.CenterCrop(22)], p=0.1),
        transforms.Resize((28, 28)),
        transforms.RandomRotation((-15.0, 15.0), fill=0),
    ]
    train_loader, test_loader = pil_loaders(data_dir, train_images, train_transform, 512, 512, num_workers=2)
    model = S5TemplateNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.1)
    return model, optimizer, scheduler, "epoch", train_loader, test_loader, None


def setup_examples(data_dir, train_images, epochs, seed):
    # pytorch/examples shuffles only on CUDA; shuffling here gives the baseline its best case.
    train_loader, test_loader = pil_loaders(data_dir, train_images, [], 64, 1000, num_workers=0)
    model = ExamplesNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    return model, optimizer, scheduler, "epoch", train_loader, test_loader, None


SETUPS = {"ours": setup_ours, "s5_template": setup_s5_template, "pytorch_examples": setup_examples}


def evaluate(model, loader):
    """Summed test loss over the set divided by its size, and accuracy in %."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.inference_mode():
        for data, target in loader:
            output = model(data)
            total_loss += F.nll_loss(output, target, reduction="sum").item()
            correct += (output.argmax(dim=1) == target).sum().item()
    n = len(loader.dataset)
    return total_loss / n, 100 * correct / n


def train_step(model, optimizer, data, target, ema=None):
    """One SGD step on the NLL loss, then the moving average of the weights when there is one."""
    optimizer.zero_grad(set_to_none=True)
    F.nll_loss(model(data), target).backward()
    optimizer.step()
    if ema is not None:
        ema.update_parameters(model)


def train_run(name, data_dir, train_images, epochs, seed, stop_at_target=False):
    """Train one model; return its per-epoch record. Wall time counts training and test passes.

    Where the setup gives a moving average of the weights (ours), that is what gets tested.
    """
    utils.set_seed(seed)
    model, optimizer, scheduler, step_every, train_loader, test_loader, ema = SETUPS[name](
        data_dir, train_images, epochs, seed
    )
    record = {"name": name, "seed": seed, "params": sum(p.numel() for p in model.parameters()), "epochs": []}
    wall = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        for data, target in tqdm(train_loader, desc=f"{name} seed {seed} epoch {epoch}/{epochs}", leave=False):
            train_step(model, optimizer, data, target, ema)
            if step_every == "batch":
                scheduler.step()
        if step_every == "epoch":
            scheduler.step()
        train_s = time.perf_counter() - start
        test_loss, test_acc = evaluate(model if ema is None else ema, test_loader)
        wall += time.perf_counter() - start
        record["epochs"].append(
            dict(epoch=epoch, train_s=train_s, wall_s=wall, test_loss=test_loss, test_acc=test_acc)
        )
        tqdm.write(f"{name} seed {seed} epoch {epoch}: train {train_s:.1f} s, test accuracy {test_acc:.2f}%")
        if stop_at_target and test_acc >= TARGET_ACC:
            break
    return record


def pipeline_cost(data_dir, train_images, seed):
    """Time one epoch of our model with the real loader, and the same steps on one pre-loaded batch."""
    utils.set_seed(seed)
    model, optimizer, _, _, train_loader, _, ema = setup_ours(data_dir, train_images, 1, seed)
    model.train()

    def run(batches):
        start = time.perf_counter()
        for data, target in tqdm(batches, total=len(train_loader), desc="pipeline cost", leave=False):
            train_step(model, optimizer, data, target, ema)
        return time.perf_counter() - start

    fixed = next(iter(train_loader))
    real_s = run(train_loader)
    preloaded_s = run(fixed for _ in range(len(train_loader)))
    return dict(real_loader_s=real_s, preloaded_s=preloaded_s, share=(real_s - preloaded_s) / real_s)


def time_to_target(record):
    return next((e["wall_s"] for e in record["epochs"] if e["test_acc"] >= TARGET_ACC), None)


def summarize(runs):
    summary = {}
    for name in SETUPS:
        mine = [r for r in runs if r["name"] == name]
        if not mine:
            continue
        finals = [r["epochs"][-1]["test_acc"] for r in mine]
        reached = [t for t in map(time_to_target, mine) if t is not None]
        summary[name] = dict(
            params=mine[0]["params"],
            seeds=len(mine),
            epochs=[len(r["epochs"]) for r in mine],
            epoch_train_s=statistics.median(e["train_s"] for r in mine for e in r["epochs"]),
            run_wall_s=statistics.median(r["epochs"][-1]["wall_s"] for r in mine),
            time_to_99_s=statistics.median(reached) if len(reached) == len(mine) else None,
            final_acc_median=statistics.median(finals),
            final_acc_min=min(finals),
            final_acc_max=max(finals),
        )
    ours = summary.get("ours")
    for name in ("s5_template", "pytorch_examples"):
        if ours and name in summary:
            base = summary[name]
            summary[f"epoch_speedup_vs_{name}"] = base["epoch_train_s"] / ours["epoch_train_s"]
            if base["time_to_99_s"] and ours["time_to_99_s"]:
                summary[f"time_to_99_speedup_vs_{name}"] = base["time_to_99_s"] / ours["time_to_99_s"]
    return summary


def markdown_table(summary):
    rows = [
        "| model | parameters | epochs | s / training epoch | time to 99.0% | final test accuracy (median, min-max) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name in SETUPS:
        s = summary.get(name)
        if s is None:
            continue
        t99 = f"{s['time_to_99_s']:.0f} s" if s["time_to_99_s"] else "not reached"
        epochs = "/".join(map(str, sorted(set(s["epochs"]))))
        rows.append(
            f"| {name} | {s['params']:,} | {epochs} | {s['epoch_train_s']:.1f} | {t99} | "
            f"{s['final_acc_median']:.2f}% ({s['final_acc_min']:.2f}-{s['final_acc_max']:.2f}, {s['seeds']} seed{'s' * (s['seeds'] > 1)}) |"
        )
    return "\n".join(rows)


def plot(runs, path):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = {"ours": "tab:blue", "s5_template": "tab:orange", "pytorch_examples": "tab:green"}
    for name in SETUPS:
        for i, r in enumerate(x for x in runs if x["name"] == name):
            xs = [0] + [e["wall_s"] for e in r["epochs"]]
            ys = [None] + [e["test_acc"] for e in r["epochs"]]
            ax.plot(xs[1:], ys[1:], marker="o", color=colors[name], alpha=0.9 if i == 0 else 0.5,
                    label=name if i == 0 else None)
    ax.axhline(TARGET_ACC, color="gray", linestyle="--", linewidth=1, label=f"{TARGET_ACC}%")
    ax.set_xlabel("wall time, training and test passes (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(95, 100)  # epochs below 95% (the S5 template's first) fall off the bottom
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    ax.set_title("MNIST test accuracy against wall time, same machine, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer epochs, 12,000 training images: a few minutes")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DATA_DIR, else ./data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds for our model")
    parser.add_argument("--template-epochs", type=int, default=2, help="epochs of the S5 template (20 take over an hour on 2 cores)")
    parser.add_argument("--examples-epochs", type=int, default=8, help="at most this many pytorch/examples epochs; stops at 99.0%%")
    parser.add_argument("--train-images", type=int, default=None, help="train on the first N images only (default: all 60,000)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"), help="JSON file to write")
    args = parser.parse_args()

    data_dir = utils.resolve_data_dir(args.data_dir)
    utils.load_mnist(data_dir, download=False)  # fail early, with the clear message, if absent
    epochs = notebook_defaults()["EPOCHS"]
    seeds, template_epochs, examples_epochs = args.seeds, args.template_epochs, args.examples_epochs
    train_images = args.train_images
    if args.quick:
        seeds, epochs, template_epochs, examples_epochs = seeds[:1], 2, 1, 1
        train_images = train_images or 12_000

    runs = [train_run("ours", data_dir, train_images, epochs, seed) for seed in seeds]
    runs.append(train_run("pytorch_examples", data_dir, train_images, examples_epochs, seeds[0], stop_at_target=True))
    runs.append(train_run("s5_template", data_dir, train_images, template_epochs, seeds[0]))
    result = dict(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=dict(cpus=torch.get_num_threads(), processor=platform.processor() or platform.machine(),
                     python=platform.python_version(), torch=torch.__version__),
        quick=args.quick,
        train_images=train_images or 60_000,
        notebook_defaults={k: v for k, v in notebook_defaults().items() if k not in ("DATA_DIR", "OUTPUT_DIR")},
        pipeline=pipeline_cost(data_dir, train_images, seeds[0]),
        runs=runs,
    )
    result["summary"] = summarize(runs)
    out = Path(args.out)
    utils.save_json(result, out)
    plot(runs, out.with_suffix(".png"))
    print(markdown_table(result["summary"]))
    print(f"input pipeline: {100 * result['pipeline']['share']:.1f}% of a training epoch")
    for key, value in result["summary"].items():
        if "speedup" in key:
            print(f"{key}: {value:.1f}x")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
