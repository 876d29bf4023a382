"""workbench.speed: COMPILE and PRECISION, measured on the machine when "auto"."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from conftest import REPO
from model import MNISTNet
from notebook_cells import TRAINING_CELLS, run_cells, train_until_ctrl_c
from workbench import choices, folders, parameters, plots, speed

TINY = ((4,), (4,), (4,), (4,))  # a network small enough to time in a blink


@pytest.fixture
def modes(params):
    """The parameters with both choices "auto"."""
    return {**params, "COMPILE": "auto", "PRECISION": "auto"}


def timed(monkeypatch, ms_by_mode, mflop=26.0):
    """Make each mode's steps take `ms_by_mode[name]` ms (an exception: raise it) and the
    network's step `mflop` MFLOP an image (26, the default network's: not compiled by the rule);
    return the modes warmed up, in order."""
    warmed = []
    monkeypatch.setattr(speed, "step_mflop", lambda model: mflop)

    def fake(model, mode, batch_size, give_up=None):
        warmed.append(mode.name)
        ms = ms_by_mode[mode.name]
        if isinstance(ms, Exception):
            raise ms
        if give_up is not None and ms / 1000 > give_up:
            raise speed.TooSlow(f"{ms:.0f} ms a step while warming up")
        return lambda: ms / 1000

    monkeypatch.setattr(speed, "warmed_step", fake)
    monkeypatch.setattr(speed, "missing_cpu_compiler", lambda: None)
    return warmed


def test_auto_takes_the_fastest_precision_measured_and_records_every_time(modes, monkeypatch):
    ms = {"fp32": 10.0, "bf16": 6.0, "fp32 compiled": 12.0, "bf16 compiled": 7.0}
    measured = timed(monkeypatch, ms)
    chosen = speed.choose(modes, MNISTNet(TINY), 8)
    # A step of 26 MFLOP an image is not compiled: the compiled modes are never timed.
    assert measured == ["fp32", "bf16"]
    assert (chosen["precision"], chosen["compiled"]) == ("bf16", False)
    assert chosen["step_ms"] == pytest.approx({"fp32": 10.0, "bf16": 6.0})
    assert "fastest" in chosen["why"] and chosen["seconds"] >= 0
    assert "not compiled: a training step of 26 MFLOP an image" in chosen["skipped"]
    assert "bf16, not compiled" in speed.describe(chosen)


def test_a_small_network_times_the_compiled_modes_too(modes, monkeypatch):
    ms = {"fp32": 10.0, "bf16": 9.0, "fp32 compiled": 8.0, "bf16 compiled": 6.0}
    warmed = timed(monkeypatch, ms, mflop=6.0)
    chosen = speed.choose(modes, MNISTNet(TINY), 8, last_batch_size=3)
    assert warmed == [*ms, "bf16 compiled", "bf16 compiled"]  # timed, then compiled for 8 and 3
    assert (chosen["precision"], chosen["compiled"]) == ("bf16", True)
    assert chosen["step_ms"] == pytest.approx(ms) and chosen["skipped"] == ""
    assert chosen["compiled_for"] == [8, 3] and chosen["compile_s"] >= 0


def test_a_mode_that_cannot_win_is_left_out_before_its_warm_up_ends(modes, monkeypatch):
    # bfloat16 emulated (a CPU without AVX-512): ten times fp32's step. Its compiled mode is not
    # compiled to be timed either.
    warmed = timed(monkeypatch, {"fp32": 10.0, "bf16": 100.0, "fp32 compiled": 12.0}, mflop=6.0)
    chosen = speed.choose(modes, MNISTNet(TINY), 8)
    assert warmed == ["fp32", "bf16", "fp32 compiled"]
    assert (chosen["precision"], chosen["compiled"]) == ("fp32", False)
    assert chosen["failed"] == {
        "bf16": "TooSlow: 100 ms a step while warming up",
        "bf16 compiled": "not timed: bf16 TooSlow: 100 ms a step while warming up",
    }


def test_a_warm_up_step_over_the_limit_gives_up():
    with pytest.raises(speed.TooSlow, match="ms a step while warming up"):
        speed.warmed_step(MNISTNet(TINY), speed.Mode(), 8, give_up=0.0)
    assert speed.warmed_step(MNISTNet(TINY), speed.Mode(), 8, give_up=60.0)() > 0


def test_the_rule_leaves_compiling_out_for_the_default_network_not_the_budgets():
    assert speed.step_mflop(MNISTNet()) == pytest.approx(26, abs=1)
    for small in (((8, 8), (12, 12), 16, 12), (12, (20, 20), 24, 28)):
        assert speed.step_mflop(MNISTNet(small)) < speed.COMPILE_BELOW_MFLOP
    modes = [speed.Mode(p, c) for c in (False, True) for p in ("fp32", "bf16")]
    kept, why = speed.by_rule(modes, MNISTNet())
    assert kept == modes[:2] and "26 MFLOP an image" in why
    assert speed.by_rule(modes, MNISTNet(((8, 8), (12, 12), 16, 12))) == (modes, "")
    assert speed.by_rule(modes[2:], MNISTNet()) == (modes[2:], "")  # COMPILE = True: no rule


def test_a_choice_is_measured_once_and_remembered_for_the_machine(modes, monkeypatch):
    warmed = timed(monkeypatch, {"fp32": 10.0, "bf16": 6.0})
    first = speed.choose(modes, MNISTNet(TINY), 8)
    again = speed.choose(modes, MNISTNet(TINY), 8)
    assert warmed == ["fp32", "bf16"]  # the second choice measured nothing
    assert (again["precision"], again["compiled"], again["step_ms"]) == (
        first["precision"], first["compiled"], first["step_ms"])  # fmt: skip
    assert f"remembered in {choices.path()}: delete it to measure again" in again["why"]
    # Another batch size, network or set of modes allowed is measured afresh.
    speed.choose(modes, MNISTNet(TINY), 16)
    speed.choose(modes, MNISTNet((4, 4, 4, 8)), 8)
    speed.choose({**modes, "COMPILE": False}, MNISTNet(TINY), 8)
    assert warmed == ["fp32", "bf16"] * 4


@pytest.mark.parametrize("damage", ["not json {", "[1, 2]", '{"key": {"precision": "fp32"}}'])
def test_a_damaged_cache_of_choices_is_measured_again_and_rewritten(modes, monkeypatch, damage):
    warmed = timed(monkeypatch, {"fp32": 10.0, "bf16": 6.0})
    choices.path().write_text(damage)
    assert speed.choose(modes, MNISTNet(TINY), 8)["precision"] == "bf16"
    assert warmed == ["fp32", "bf16"]
    assert len(json.loads(choices.path().read_text())) >= 1


def test_a_cache_that_cannot_be_written_only_costs_a_measurement(modes, monkeypatch, tmp_path):
    warmed = timed(monkeypatch, {"fp32": 10.0, "bf16": 6.0})
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("S5_SPEED_CACHE", str(blocked / "speed.json"))  # a folder that is a file
    assert speed.choose(modes, MNISTNet(TINY), 8)["precision"] == "bf16"
    assert speed.choose(modes, MNISTNet(TINY), 8)["precision"] == "bf16"
    assert warmed == ["fp32", "bf16"] * 2


def test_a_mode_within_the_margin_is_not_taken_over_the_simplest(modes, monkeypatch):
    # 3% faster is within what the machine's noise can make of the same speed.
    timed(monkeypatch, {"fp32": 10.0, "bf16": 9.7, "fp32 compiled": 10.2, "bf16 compiled": 9.8})
    chosen = speed.choose(modes, MNISTNet(TINY), 8)
    assert (chosen["precision"], chosen["compiled"]) == ("fp32", False)
    assert "no mode was 5% faster than fp32" in chosen["why"]


def test_modes_take_turns_so_a_slow_stretch_falls_on_every_mode(modes, monkeypatch):
    # The machine runs 5x slower for its first 6 steps, then at its speed: timed one mode after
    # the other, fp32 (timed first) would read 50 ms and lose to a mode no faster than it.
    ms = {"fp32": 10.0, "bf16": 9.8}
    calls = []

    def fake(model, mode, batch_size, give_up=None):
        def step():
            calls.append(mode.name)
            return ms[mode.name] / 1000 * (5 if len(calls) <= 6 else 1)

        return step

    monkeypatch.setattr(speed, "warmed_step", fake)
    monkeypatch.setattr(speed, "missing_cpu_compiler", lambda: None)
    monkeypatch.setattr(speed, "step_mflop", lambda model: 26.0)
    chosen = speed.choose(modes, MNISTNet(TINY), 8)
    # One step of the simplest mode first sets what cannot win; then the turns.
    assert calls[:5] == ["fp32", "fp32", "fp32", "bf16", "bf16"]
    assert len(calls) == 1 + 2 * speed.TIMED_STEPS
    assert chosen["step_ms"] == pytest.approx(ms)
    assert (chosen["precision"], chosen["compiled"]) == ("fp32", False)


def test_a_mode_that_cannot_run_is_left_out_and_named(modes, monkeypatch):
    error = RuntimeError("no bfloat16 here")
    ms = {"fp32": 10.0, "bf16": error, "fp32 compiled": 8.0, "bf16 compiled": error}
    timed(monkeypatch, ms, mflop=6.0)
    chosen = speed.choose(modes, MNISTNet(TINY), 8)
    assert (chosen["precision"], chosen["compiled"]) == ("fp32", True)
    assert chosen["failed"] == {
        "bf16": "RuntimeError: no bfloat16 here",
        "bf16 compiled": "not timed: bf16 RuntimeError: no bfloat16 here",
    }
    # The simplest mode is how the run trains when nothing else can: its error is the run's.
    choices.path().unlink()  # measured afresh
    timed(monkeypatch, {"fp32": error, "bf16": 5.0})
    with pytest.raises(RuntimeError, match="no bfloat16 here"):
        speed.choose(modes, MNISTNet(TINY), 8)


def test_modes_set_by_hand_are_taken_without_measuring(modes, monkeypatch):
    measured = timed(monkeypatch, {})
    chosen = speed.choose({**modes, "COMPILE": False, "PRECISION": "bf16"}, MNISTNet(TINY), 8)
    assert measured == []
    assert (chosen["precision"], chosen["compiled"]) == ("bf16", False)
    assert chosen["why"] == "as the parameters cell sets it"
    # A compiled mode set by hand is not timed either, only compiled before training.
    measured = timed(monkeypatch, {"bf16 compiled": 1.0})
    chosen = speed.choose({**modes, "COMPILE": True, "PRECISION": "bf16"}, MNISTNet(TINY), 8)
    assert measured == ["bf16 compiled"] and "step_ms" not in chosen
    assert (chosen["precision"], chosen["compiled"]) == ("bf16", True)
    assert chosen["why"] == "as the parameters cell sets it" and chosen["compiled_for"] == [8]


def test_a_compiled_mode_chosen_is_compiled_for_every_batch_size_of_an_epoch(modes, monkeypatch):
    warmed = []

    def fake(model, mode, batch_size, give_up=None):
        warmed.append((mode.name, batch_size))
        return lambda: {"fp32": 10.0, "bf16": 9.0, "fp32 compiled": 8.0}.get(mode.name, 6.0)

    monkeypatch.setattr(speed, "warmed_step", fake)
    monkeypatch.setattr(speed, "missing_cpu_compiler", lambda: None)
    monkeypatch.setattr(speed, "step_mflop", lambda model: 6.0)
    chosen = speed.choose(modes, MNISTNet(TINY), 8, last_batch_size=3)
    assert (chosen["precision"], chosen["compiled"]) == ("bf16", True)
    # Each mode warmed up to be timed, then the one chosen compiled for both batch sizes.
    assert warmed[:4] == [(m, 8) for m in ("fp32", "bf16", "fp32 compiled", "bf16 compiled")]
    assert warmed[4:] == [("bf16 compiled", 8), ("bf16 compiled", 3)]
    assert chosen["compiled_for"] == [8, 3] and chosen["seconds"] >= 0
    # An epoch without a smaller last batch has one size; an uncompiled mode compiles nothing.
    warmed.clear()
    assert speed.choose(modes, MNISTNet(TINY), 8)["compiled_for"] == [8]
    assert warmed == [("bf16 compiled", 8)]  # the choice remembered, only compiled
    warmed.clear()
    chosen = speed.choose({**modes, "COMPILE": False}, MNISTNet(TINY), 8, last_batch_size=3)
    assert not chosen["compiled"] and "compiled_for" not in chosen
    assert ("bf16", 3) not in warmed and len(warmed) == 2


def test_a_loaders_batch_sizes_are_the_ones_timed_and_compiled(modes, monkeypatch):
    warmed = []

    def fake(model, mode, batch_size, give_up=None):
        warmed.append(batch_size)
        return lambda: 0.01

    monkeypatch.setattr(speed, "warmed_step", fake)
    monkeypatch.setattr(speed, "missing_cpu_compiler", lambda: None)
    settings = {**modes, "COMPILE": True, "PRECISION": "fp32", "BATCH_SIZE": 32}
    for images, sizes in ((100, [32, 4]), (96, [32]), (20, [20])):  # 20: one smaller batch
        loader = DataLoader(TensorDataset(torch.zeros(images)), batch_size=32)
        warmed.clear()
        assert speed.choose_for(settings, MNISTNet(TINY), loader)["compiled_for"] == sizes
        assert warmed == sizes
        assert sorted({len(batch) for (batch,) in loader}, reverse=True) == sizes


def test_compiling_ahead_leaves_the_random_generators_as_they_were(modes, monkeypatch):
    # Dropout in the copy compiled draws from the run's generators, as a timed copy's does.
    def fake(model, mode, batch_size, give_up=None):
        torch.rand(1)
        return lambda: 0.01

    monkeypatch.setattr(speed, "warmed_step", fake)
    monkeypatch.setattr(speed, "missing_cpu_compiler", lambda: None)
    model = MNISTNet(TINY)  # (its initial weights are drawn here)
    rng = torch.get_rng_state()
    chosen = speed.choose({**modes, "COMPILE": True, "PRECISION": "fp32"}, model, 8, 3)
    assert chosen["compiled_for"] == [8, 3]
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.slow
@pytest.mark.skipif(
    parameters.missing_cpu_compiler() is not None,
    reason="torch.compile needs a C++ compiler for CPU kernels",
)
def test_the_model_trains_on_the_code_compiled_before_training(modes):
    # Compiled for a copy at both batch sizes, the model itself compiles nothing more when it
    # trains: no epoch, the first included, pays for compiling.
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = MNISTNet(TINY).train()
    chosen = speed.choose({**modes, "COMPILE": True, "PRECISION": "fp32"}, model, 8, 5)
    assert chosen["compiled_for"] == [8, 5]
    stepped = speed.step_model(model, speed.mode_of(chosen))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for size in (8, 5, 8):
        F.nll_loss(
            stepped(torch.randn(size, 1, 28, 28)), torch.zeros(size, dtype=torch.long)
        ).backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    # Without the last batch compiled ahead, its first step would compile: the check can fail.
    F.nll_loss(stepped(torch.randn(3, 1, 28, 28)), torch.zeros(3, dtype=torch.long)).backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs + 1


def test_auto_without_a_cxx_compiler_measures_the_uncompiled_modes_only(modes, monkeypatch):
    measured = timed(monkeypatch, {"fp32": 10.0, "bf16": 4.0})
    monkeypatch.setattr(speed, "missing_cpu_compiler", lambda: "no-such-c++")
    chosen = speed.choose(modes, MNISTNet(TINY), 8)
    assert measured == ["fp32", "bf16"] and chosen["precision"] == "bf16"
    assert "not compiled: no-such-c++" in chosen["why"]


def test_measuring_leaves_the_model_and_the_random_generators_as_they_were(modes):
    torch.manual_seed(3)
    model = MNISTNet(TINY, dropout=0.5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(module))
    chosen = speed.choose({**modes, "COMPILE": False}, model, 8)
    assert calls == []  # a hook on the model is the user's: the copies timed run without it
    # bf16 is timed, or left out where it cannot win (emulated, without AVX-512).
    assert set(chosen["step_ms"]) | set(chosen["failed"]) == {"fp32", "bf16"}
    assert all(ms > 0 for ms in chosen["step_ms"].values())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_bf16_step_model_trains_the_float32_weights_it_shares(modes):
    torch.manual_seed(0)
    model = MNISTNet(TINY).train()
    stepped = speed.step_model(model, speed.Mode("bf16"))
    output = stepped(torch.randn(8, 1, 28, 28))
    # Log-probabilities in float32, as the loss and the accuracy count expect.
    assert output.dtype == torch.float32
    assert torch.allclose(output.exp().sum(dim=1), torch.ones(8), atol=1e-5)
    F.nll_loss(output, torch.zeros(8, dtype=torch.long)).backward()
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters())
    assert stepped.state_dict().keys() == {f"module.{k}" for k in model.state_dict()}


def test_a_resumed_run_trains_in_the_mode_it_chose_when_it_started(
    tiny_root, tmp_path, monkeypatch
):
    monkeypatch.setattr(plots, "plot_samples", lambda images, labels: None)
    settings = dict(DATA_DIR=str(tiny_root), OUTPUT_DIR=str(tmp_path), EPOCHS=2, BATCH_SIZE=32,
                    SMOKE=True, COMPILE=False, PRECISION="auto")  # fmt: skip
    timed(monkeypatch, {"fp32": 10.0, "bf16": 5.0})
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    train_until_ctrl_c(namespace, 5)  # in epoch 2
    run_dir = namespace["run"].dir
    assert folders.read_params(run_dir)["speed"]["precision"] == "bf16"
    timed(monkeypatch, {"fp32": 5.0, "bf16": 10.0})  # measured now, fp32 would win
    namespace.update(RESUME=str(run_dir))
    run_cells(["training"], namespace)
    resumed = namespace["run"]
    assert resumed.epochs_done == 2 and resumed.speed["precision"] == "bf16"
    assert isinstance(resumed.step_model, speed.Autocast)


FAULTS_OF_TRAINING_STEPS = """
import resource, sys, torch
import torch.nn.functional as F
from model import MNISTNet
from workbench import speed
if sys.argv[1] == "keep":
    assert speed.keep_freed_memory()
torch.manual_seed(0)
model = MNISTNet().train()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    optimizer.zero_grad(set_to_none=True)
    F.nll_loss(model(images), labels).backward()
    optimizer.step()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow  # two processes of fifty default-network steps
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's, on Linux")
def test_kept_memory_is_reused_without_faulting_it_back_in():
    def page_faults(how):
        done = subprocess.run([sys.executable, "-c", FAULTS_OF_TRAINING_STEPS, how],
                              cwd=REPO, capture_output=True, text=True, check=True)  # fmt: skip
        return int(done.stdout)

    # Twenty fp32 steps of the default network, after five: glibc's default mapped 78,000-92,000
    # pages afresh in this machine's runs (about 16 MiB a step; one run of five steps mapped only
    # 3,500, so twenty are timed); kept, the steps reuse them (2-1,200 pages).
    assert page_faults("default") > 10_000
    assert page_faults("keep") < 2_500
