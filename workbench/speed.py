"""How this machine trains fastest: the parameters cell's COMPILE and PRECISION, measured.

COMPILE (True, False or "auto") says whether torch.compile builds the training step, PRECISION
("fp32", "bf16" or "auto") whether its layers run in bfloat16 under autocast (the weights, their
average and the test pass stay float32). An "auto" is decided on the machine at hand: `choose`
compiles by the size of the network's step (by_rule) and times a few training steps of a copy of
the model in each precision, on random images of the run's batch size, taking the fastest; a mode
must beat the simplest one allowed (fp32) by MARGIN to be taken, so noise never picks a mode that
is not faster. The choice is remembered for the machine (workbench.choices), so it is measured
once. What it measured, chose and why goes into params.json ("speed"), with the seconds it took,
so a resumed run trains as it started. The copy trains, never the model: the model, its optimiser
and every random generator are as they were. Importing this module does nothing.
"""

import copy
import ctypes
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from workbench import choices
from workbench.parameters import missing_cpu_compiler

# A mode is taken over the simplest one only when its step is at least this share faster.
MARGIN = 0.05
WARMUP_STEPS = 5  # untimed: the first steps allocate, and a compiled mode compiles
TIMED_STEPS = 10  # a mode's timed steps, taken in ROUNDS turns with the other modes'
ROUNDS = 5
# COMPILE "auto" does not compile a network whose training step takes this many million
# floating-point operations an image or more (by_rule): the default's 26, not the budgets' 6-9.
COMPILE_BELOW_MFLOP = 15
# A mode whose warm-up steps take over this many times the simplest mode's cannot win, even
# compiled (compiling gained at most 2.1x in the roofline: bf16 on the < 8k network, Xeon): it is
# left out without finishing its warm-up. bfloat16 on a CPU without AVX-512 runs about 10x slower.
HOPELESS = 3


@dataclass(frozen=True)
class Mode:
    """How the training step runs: its layers' precision, and whether it is compiled."""

    precision: str = "fp32"
    compiled: bool = False

    @property
    def name(self) -> str:
        return self.precision + (" compiled" if self.compiled else "")


class Autocast(nn.Module):
    """`module` with its forward pass under bfloat16 autocast: convolutions and the linear layer
    run in bfloat16, the weights stay float32 (and so do their gradients)."""

    def __init__(self, module: nn.Module, device_type: str):
        super().__init__()
        self.module = module
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.module(x)


def step_model(model: nn.Module, mode: Mode) -> nn.Module:
    """`model` as `mode` runs it; it shares the model's weights, so training it trains the model."""
    device_type = next(model.parameters()).device.type
    stepped = Autocast(model, device_type) if mode.precision == "bf16" else model
    if not mode.compiled:
        return stepped
    import_cpp_extension_quietly()
    # Static shapes: the last, smaller batch of an epoch gets code of its own, instead of one
    # slower dynamic-shape version for every batch.
    return torch.compile(stepped, dynamic=False)


def import_cpp_extension_quietly() -> None:
    """Import torch.utils.cpp_extension, as TorchInductor does to build CPU kernels, without the
    warning a CUDA build of PyTorch gives on a machine with no GPU: true, and nothing to act on."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension  # noqa: F401
    finally:
        logger.setLevel(level)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory PyTorch frees, for its next allocations, instead of
    giving it back to the system; return whether it could (only glibc, on Linux, can).

    On the CPU, PyTorch allocates every step's activations and gradients with malloc and frees
    them after the step. glibc maps large blocks afresh and returns freed memory at the top of its
    heap, so every step faults its megabytes back in, page by page: 1.8 million page faults and a
    fifth of an fp32 epoch of the default network on a 2-core Xeon, where bf16 had few to lose
    (benchmarks/exploration.md), and more still when modes take turns, as in `choose`.
    With blocks up to 32 MiB kept on the heap and up to 1 GiB of free heap kept mapped, a step
    reuses the pages of the one before. It holds for the rest of the process (the kernel).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameters, from glibc's malloc.h
    # mallopt returns 1 on success; other C libraries' stubs (musl's) return 0.
    return mallopt(m_mmap_threshold, 32 * 2**20) == 1 and mallopt(m_trim_threshold, 2**30) == 1


def unhooked_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` without the hooks registered on it (to look at activations, to stop a
    test at a chosen step): timing a step must not run them."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks, module._backward_hooks,
                      module._backward_pre_hooks):  # fmt: skip
            hooks.clear()
    return copied


def allowed(params: dict[str, Any], device: torch.device) -> tuple[list[Mode], str]:
    """The modes COMPILE and PRECISION allow, the simplest first; and what left any out."""
    precisions = ["fp32", "bf16"] if params["PRECISION"] == "auto" else [params["PRECISION"]]
    compiles = [False, True] if params["COMPILE"] == "auto" else [params["COMPILE"]]
    note = ""
    compiler = missing_cpu_compiler() if device.type == "cpu" else None
    if params["COMPILE"] == "auto" and compiler:
        compiles = [False]
        note = f"not compiled: {compiler} (torch.compile's C++ compiler) is missing"
    return [Mode(p, c) for c in compiles for p in precisions], note


def bare_step(model: nn.Module, mode: Mode) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """A bare training step of `model` in `mode`, as the notebook's minus its bookkeeping: forward,
    negative log-likelihood, backward, Nesterov SGD (fused). Calling it trains `model`."""
    stepped = step_model(model, mode)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True
    )

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(stepped(images), labels).backward()
        optimizer.step()

    return step


class TooSlow(Exception):
    """A mode whose warm-up steps already show it cannot win."""


def warmed_step(
    model: nn.Module, mode: Mode, batch_size: int, give_up: float | None = None
) -> Callable[[], float]:
    """A bare step of a copy of `model` in `mode`, run WARMUP_STEPS times already; calling it
    runs one more and returns the seconds it took. TooSlow when a warm-up step after the first
    (which allocates, and compiles) takes over `give_up` seconds."""
    step = bare_step(unhooked_copy(model).train(), mode)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 1, 28, 28, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch_size,), generator=generator).to(device)

    def timed() -> float:
        start = time.perf_counter()
        step(images, labels)
        if device.type != "cpu":  # wait for the accelerator's queue
            torch.accelerator.synchronize()
        return time.perf_counter() - start

    for i in range(WARMUP_STEPS):
        seconds = timed()
        if give_up is not None and i > 0 and seconds > give_up:
            raise TooSlow(f"{1000 * seconds:.0f} ms a step while warming up")
    return timed


def choose(
    params: dict[str, Any], model: nn.Module, batch_size: int, last_batch_size: int = 0
) -> dict[str, Any]:
    """params.json's "speed" record: the mode to train in, what was measured and why it won.

    With no "auto" there is nothing to choose: the mode is the parameters cell's. Otherwise the
    modes allowed are timed on `batch_size` images (fastest), but for those a rule leaves out
    (by_rule: a network too large for compiling to win is not compiled, without compiling it to
    time it). A mode other than the simplest that fails to run, or cannot win, is left out, with
    the reason in "failed". The choice is remembered for this machine and network
    (workbench.choices), so the next run chooses without measuring. "seconds" counts the
    choosing.

    A compiled mode is then compiled, before training, for `batch_size` and for the epoch's
    smaller last batch of `last_batch_size` images (0: none): compiled code is made for one batch
    size (static shapes), and the model shares the code compiled for a copy of it. So the first
    epoch pays for no compiling; "compile_s" counts it, "compiled_for" names the batch sizes. (A
    resumed run does not choose again: it compiles in its first epoch.)
    """
    device = next(model.parameters()).device
    modes, note = allowed(params, device)
    start = time.perf_counter()
    # Dropout in the copies draws from the generators the run draws from: put them back after.
    cpu_only = device.type == "cpu"
    with torch.random.fork_rng(devices=[] if cpu_only else None, device_type=device.type):
        key = choices.key(model, [mode.name for mode in modes], batch_size)
        if len(modes) == 1:
            best, why, measured = modes[0], "as the parameters cell sets it", {}
        elif remembered := choices.recall(key):
            best, why = Mode(remembered["precision"], remembered["compiled"]), remembered["why"]
            measured = {name: remembered[name] for name in ("step_ms", "skipped")}
        else:
            best, why, measured = fastest(*by_rule(modes, model), model, batch_size)
            choices.remember(key, dict(**asdict(best), why=why, **measured))
        measured["seconds"] = time.perf_counter() - start
        if best.compiled:
            sizes = [size for size in dict.fromkeys([batch_size, last_batch_size]) if size]
            for size in sizes:
                warmed_step(model, best, size)
            measured["compiled_for"] = sizes
            measured["compile_s"] = time.perf_counter() - start - measured["seconds"]
    return record(best, why + (f"; {note}" if note else ""), **measured)


def by_rule(modes: list[Mode], model: nn.Module) -> tuple[list[Mode], str]:
    """The modes worth timing of those allowed, and the rule's reason.

    A network whose training step takes COMPILE_BELOW_MFLOP or more an image is not compiled
    under COMPILE "auto", without timing the compiled modes (compiling each to time it costs tens
    of seconds on a fresh machine): compiling fuses the many small kernels whose overhead weighs
    on a small network's step, and leaves a larger one's convolutions to the same oneDNN kernels.
    The default network (26 MFLOP an image) trained slower compiled on every CPU measured
    (benchmarks/exploration.md): bf16 12.2 against 9.7 ms a step on an Intel Xeon with AMX, 25.0
    against 18.5 on an AMD EPYC with AVX-512, fp32 48-58 against 30-38 on one with AVX2 alone;
    the budget networks' (6 and 9 MFLOP) won compiled on the Xeon (9.6-9.7 against 14.0-20.0).
    """
    if len({mode.compiled for mode in modes}) == 1:
        return modes, ""
    mflop = step_mflop(model)
    if mflop < COMPILE_BELOW_MFLOP:
        return modes, ""
    why = f"not compiled: a training step of {mflop:.0f} MFLOP an image, at least the "
    return [
        mode for mode in modes if not mode.compiled
    ], why + f"{COMPILE_BELOW_MFLOP} past which compiling loses"


def step_mflop(model: nn.Module) -> float:
    """Millions of floating-point operations of a training step, forward and backward, per image:
    three times the forward pass's (the backward computes gradients of inputs and of weights)."""
    copied = unhooked_copy(model).eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        copied(torch.zeros(1, 1, 28, 28, device=device))
    return 3 * counter.get_total_flops() / 1e6


def choose_for(params: dict[str, Any], model: nn.Module, loader: DataLoader) -> dict[str, Any]:
    """`choose` for training `model` on `loader`: steps timed on its batches of BATCH_SIZE images
    (the whole set when smaller), a compiled mode also compiled for its smaller last batch."""
    images = len(loader.dataset)
    batch = min(params["BATCH_SIZE"], images)
    return choose(params, model, batch, last_batch_size=images % batch)


def fastest(
    modes: list[Mode], rule: str, model: nn.Module, batch_size: int
) -> tuple[Mode, str, dict[str, Any]]:
    """The fastest of `modes` (the first, the simplest, unless another beats it by MARGIN), why,
    and what was measured: each mode's median step and the errors of those that cannot run.

    The modes' timed steps take turns, ROUNDS times, so a stretch of the machine running slow or
    fast falls on every mode alike; each mode's time is the median of its steps. `rule` is why
    the modes are these (by_rule), kept in "skipped".
    """
    steps, failed, reference = {}, {}, None
    for i, mode in enumerate(modes):
        slow = Mode(mode.precision)
        if mode.compiled and slow in modes and slow not in steps:  # its precision cannot run or win
            failed[mode.name] = f"not timed: {slow.name} {failed.get(slow.name, 'failed')}"
            continue
        try:
            steps[mode] = warmed_step(model, mode, batch_size, reference and HOPELESS * reference)
        except Exception as err:  # a mode that cannot run here, or cannot win, is no choice
            if i == 0:
                raise
            failed[mode.name] = f"{type(err).__name__}: {err}"[:300]
        if i == 0:  # the simplest mode's step: others over HOPELESS times it cannot win
            reference = steps[mode]()
    seconds = {mode: [] for mode in steps}
    for _ in range(ROUNDS):
        for mode, step in steps.items():
            seconds[mode] += [step() for _ in range(TIMED_STEPS // ROUNDS)]
    step_ms = {mode.name: 1000 * statistics.median(times) for mode, times in seconds.items()}
    simplest = modes[0]
    best = min(steps, key=lambda m: step_ms[m.name])
    if step_ms[best.name] > (1 - MARGIN) * step_ms[simplest.name]:
        best = simplest
    why = (
        f"fastest measured: {step_ms[best.name]:.1f} ms a step"
        if best != simplest
        else f"no mode was {MARGIN:.0%} faster than {simplest.name}"
    )
    why += f"; {rule}" if rule else ""
    return best, why, dict(step_ms=step_ms, failed=failed, skipped=rule)


def record(mode: Mode, why: str, **measured: Any) -> dict[str, Any]:
    return dict(**asdict(mode), why=why, **measured)


def mode_of(speed: dict[str, Any]) -> Mode:
    """The Mode a params.json "speed" record chose."""
    return Mode(speed["precision"], speed["compiled"])


def describe(speed: dict[str, Any]) -> str:
    """One line for the training cell: the mode chosen and why."""
    mode = mode_of(speed)
    how = f"{mode.precision}, {'compiled' if mode.compiled else 'not compiled'}"
    measured = ", ".join(f"{name} {ms:.1f} ms" for name, ms in speed.get("step_ms", {}).items())
    return f"Training in {how} ({speed['why']}" + (f"; {measured})" if measured else ")")
