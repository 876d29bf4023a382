"""The notebook's two objects: the `Workbench` of its check cell, the `Run` of its training cell.

`Workbench(globals(), device)` checks every parameter, RESUME and the MNIST files before anything
runs, and keeps the notebook's namespace, so later cells are checked against the values as they
are then. `bench.start_run(...)` checks again, compares the loaders and the model with the
parameters, and gives a `Run`: a new run folder, or RESUME's run put back as it stopped, with the
model as COMPILE and PRECISION run it (`run.step_model`, workbench.speed). The run saves every
epoch (`run.save_epoch`), turns Ctrl-C into a stop that keeps what finished (`with run:`), and
hands the cells after training its history and analysis, refusing until there is one. Ctrl-C
while the run's files change waits until they and the Run agree again (files.interrupts_deferred).
Importing this module does nothing.
"""

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, RandomSampler

from workbench import (
    analysis,
    cells,
    checkpoints,
    folders,
    mnist,
    parameters,
    resume,
    schema,
    speed,
)
from workbench.files import interrupts_deferred


class Workbench:
    """The notebook's parameters, checked now and again whenever a run starts."""

    def __init__(self, namespace: Mapping[str, Any], device: str | torch.device = "cpu"):
        self.namespace = namespace  # the notebook's globals(): read as they are at each check
        self.device = torch.device(device)
        self.last_run = None
        self.params = self.check()
        self.seed = self.params["SEED"]  # the check cell seeds the model's initial weights with it

    def check(self) -> dict[str, Any]:
        """The parameters as they are now, checked with RESUME and the MNIST files they name."""
        params = parameters.check_parameters(self.namespace, self.device)
        if not params["RESUME"]:  # a new run's folder goes into OUTPUT_DIR
            folders.check_output_dir(params["OUTPUT_DIR"])
        resume.check_resumable(params)
        mnist.prepare(params["DATA_DIR"], subset=params["SMOKE"])
        return params

    def start_run(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer,
        scheduler: optim.lr_scheduler.LRScheduler,
        ema_model: optim.swa_utils.AveragedModel,
        train_loader: DataLoader,
        test_loader: DataLoader,
    ) -> "Run":
        """A run of these objects with the parameters as they are now: RESUME's, or a new one.

        A new run's folder records the run whose weights `model` holds, when it trained them.
        """
        params = self.params = self.check()
        cells.check_built(params, model, train_loader, test_loader, seeded=self.seed)
        training = resume.Training(model, optimizer, scheduler, ema_model)
        speed.keep_freed_memory()  # before anything is timed: steps reuse their memory
        if params["RESUME"]:
            chosen = folders.read_params(params["RESUME"])["speed"]  # the mode it started in
        else:
            chosen = speed.choose_for(params, model, train_loader)  # a stop here leaves no folder
        # Ctrl-C waits until the run's folder is made or put back and its Run made, then says
        # where it is and how to go on. (The training cell's `run` stays what it was.)
        run = None
        try:
            with interrupts_deferred():
                run = self._open_run(params, training, train_loader, chosen)
        except KeyboardInterrupt:
            if run is not None:
                run.say_stopped()
            raise
        self.last_run = run
        return run

    def _open_run(
        self,
        params: dict[str, Any],
        training: resume.Training,
        train_loader: DataLoader,
        chosen: dict[str, Any],
    ) -> "Run":
        """RESUME's run put back as it stopped, or a new run folder; the Run of it."""
        model = training.model
        if params["RESUME"]:
            run_dir, history = resume.restore(params, training, train_loader)
            print(f"Resuming {run_dir} after epoch {len(history['test_acc'])}")
        else:
            history = {key: [] for key in schema.METRIC_KEYS}
            last = self.last_run
            continued = last.dir if last and last.training.model is model else None
            initial = resume.state(training, history, params, train_loader)
            run_dir = folders.create(
                params["OUTPUT_DIR"], params, model, self.device, continued, initial, chosen
            )
            print(f"Saving into {run_dir}")
        print(speed.describe(chosen))
        return Run(run_dir, params, training, train_loader, history, self.device, chosen)


class Run:
    """One run of the training cell: its folder, its epochs and what the cells after it read."""

    def __init__(
        self,
        run_dir: Path,
        params: dict[str, Any],
        training: resume.Training,
        loader: DataLoader,
        history: dict[str, list[float]],
        device: torch.device,
        chosen: dict[str, Any],
    ):
        self.dir, self.params, self.training = run_dir, params, training
        self.loader, self.device = loader, device
        self.speed = chosen  # how this run trains, and why: params.json's "speed"
        # The model as that mode runs it: the same weights, so training it trains the model.
        self.step_model = speed.step_model(training.model, speed.mode_of(chosen))
        self._history = history
        self._analysis = None

    @property
    def epochs_done(self) -> int:
        return len(self._history["test_acc"])

    @property
    def history(self) -> dict[str, list[float]]:
        """Each metric per finished epoch; StaleCellError before the first epoch has finished."""
        if not self.epochs_done:
            raise cells.not_trained()
        return self._history

    def save_epoch(self, **values: float) -> None:
        """Record a finished epoch's values (one per schema.METRIC_KEYS) and save the epoch."""
        if values.keys() != set(schema.METRIC_KEYS):
            raise TypeError(f"save_epoch takes exactly {', '.join(schema.METRIC_KEYS)}")
        history = {key: [*self._history[key], values[key]] for key in schema.METRIC_KEYS}
        # Ctrl-C waits until the files are saved and the history is theirs: a stop leaves the two
        # agreeing, on the epoch before or on this one. An error leaves both on the epoch before.
        with interrupts_deferred():
            folders.save_epoch(
                self.dir,
                history,
                self.training.ema_model.module,
                self.params["EPOCHS"],
                resume.state(self.training, history, self.params, self.loader),
            )
            self._history, self._analysis = history, None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        """Ctrl-C (Jupyter's stop button) ends the training loop as a stop that loses nothing."""
        if kind is KeyboardInterrupt:
            self.say_stopped()
            return True
        return False

    def say_stopped(self) -> None:
        """Print what a stop kept, and the RESUME value to go on with."""
        print(
            f"Interrupted: the {self.epochs_done} finished epochs are saved in {self.dir}; "
            f"to go on, set RESUME = {str(self.dir)!r} and run the notebook again."
        )

    def analyse(self, test_loader: DataLoader, tta_shift: int) -> analysis.Analysis:
        """Predict every test image with the run's averaged weights (test-time augmentation with
        `tta_shift` > 0) and add that accuracy to metrics.json."""
        if not self.epochs_done:
            raise cells.not_trained()
        parameters.check_value("TTA_SHIFT", tta_shift)
        if isinstance(getattr(test_loader, "sampler", None), RandomSampler):
            raise ValueError(
                "run.analyse was given a loader that shuffles, as the training loader does: what "
                "it measures is recorded as the test accuracy. Pass test_loader."
            )
        # The weights saved with the last finished epoch, which metrics.json describes: after a
        # stop in the middle of an epoch, the average in memory has moved on from them.
        saved = checkpoints.load_weights(
            copy.deepcopy(self.training.ema_model.module),
            self.dir / folders.WEIGHTS_FILE,
            map_location=self.device,
        )
        result = analysis.analyse(saved, test_loader, self.device, tta_shift)
        with interrupts_deferred():  # metrics.json and `run.analysis` hold the result together
            folders.save_final(self.dir, tta_shift=tta_shift, final_test_acc=result.accuracy)
            self._analysis = result
        return result

    @property
    def analysis(self) -> analysis.Analysis:
        """What analyse() found for the weights of the last epoch; StaleCellError before it ran."""
        if not self.epochs_done:
            raise cells.not_trained()
        if self._analysis is None:
            raise cells.StaleCellError(
                f"The test images have not been predicted with the model of {self.dir} yet: run "
                "the cell that draws the confusion matrix first."
            )
        return self._analysis
