"""The notebook's train(), run from the committed cells on one batch of known images."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim

from notebook_cells import TRAINING_CELLS, run_cells, train_until_ctrl_c
from workbench import folders, parameters, runs


class Loader(list):
    """One batch, as the notebook's loaders give them, with a dataset of its size."""

    def __init__(self, images, labels):
        super().__init__([(images, labels)])
        self.dataset = images


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_train_reports_the_loss_against_the_smoothed_target(smoothing):
    namespace = run_cells(["imports", "parameters", "train-test"], LABEL_SMOOTHING=smoothing)
    torch.manual_seed(0)
    images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10), nn.LogSoftmax(dim=1))
    optimizer = optim.SGD(model.parameters(), lr=0.0)  # the weights stay as they are
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema_model = optim.swa_utils.AveragedModel(model)
    with torch.no_grad():
        log_probs = model(images)
    # PyTorch's own smoothed cross-entropy (log_softmax leaves log-probabilities unchanged).
    expected = F.cross_entropy(log_probs, labels, label_smoothing=smoothing).item()
    plain = F.nll_loss(log_probs, labels).item()

    loss, _ = namespace["train"](
        model, ema_model, "cpu", Loader(images, labels), optimizer, scheduler, epoch=1
    )

    assert loss == pytest.approx(expected, rel=1e-5)
    assert (loss == pytest.approx(plain, rel=1e-5)) == (smoothing == 0)


@pytest.mark.slow
@pytest.mark.skipif(
    parameters.missing_cpu_compiler() is not None,
    reason="torch.compile needs a C++ compiler for CPU kernels; the check cell refuses it",
)
def test_compiled_training_resumes_exactly_and_saves_the_plain_weights(tiny_root, tmp_path):
    settings = dict(
        DATA_DIR=str(tiny_root),
        OUTPUT_DIR=str(tmp_path / "outputs"),
        EPOCHS=3,
        BATCH_SIZE=32,  # 3 steps an epoch on the tiny data's 96 images
        SMOKE=True,  # the tiny data is no MNIST: the check cell takes it for a smoke run only
        PRECISION="fp32",  # the same in every run ("auto" measures, and may choose bf16)
    )
    eager = run_cells(TRAINING_CELLS, **settings, COMPILE=False)["run"]
    compiled = run_cells(TRAINING_CELLS, **settings, COMPILE=True)["run"]
    # The same arithmetic in other kernels: the same first epoch, up to rounding (later ones drift
    # apart: a few steps at this learning rate on 96 images amplify any difference).
    assert compiled.history["train_loss"][0] == pytest.approx(
        eager.history["train_loss"][0], rel=1e-3
    )
    # Stopped in epoch 2 and resumed compiled again, it ends as the compiled run never stopped.
    namespace = run_cells(TRAINING_CELLS[:-1], **settings, COMPILE=True)
    train_until_ctrl_c(namespace, 5)  # in epoch 2
    assert namespace["run"].epochs_done == 1
    namespace.update(RESUME=str(namespace["run"].dir))
    run_cells(["training"], namespace)
    resumed = namespace["run"]
    assert resumed.history["train_loss"] == compiled.history["train_loss"]
    weights = torch.load(resumed.dir / folders.WEIGHTS_FILE, weights_only=True)
    # The plain model's keys, with no "_orig_mod." prefix.
    assert weights.keys() == namespace["model"].state_dict().keys()
    for key, tensor in runs.load_model(compiled.dir).state_dict().items():
        assert torch.equal(weights[key], tensor), key
