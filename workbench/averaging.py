"""The moving average of the weights that the notebook tests, updated cheaply at every step.

`ExponentialAverage(model, decay)` is `torch.optim.swa_utils.AveragedModel(model,
multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)`: the same averaged weights and
BatchNorm statistics after every update, the same state_dict, and an AveragedModel wherever one is
expected. Only `update_parameters` differs: AveragedModel's walks every parameter and buffer in
Python and sorts them by device and dtype at every call, which costs more than the arithmetic for
a network this small: in the training loop on a 2-core CPU, 25.1 ms a step with AveragedModel's
update, 24.3 ms with this one, 24.5 ms with no average at all (benchmarks/exploration.md).
Importing this module does nothing.
"""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class ExponentialAverage(AveragedModel):
    """An exponential moving average of `model`'s weights and buffers: after each update,
    average = decay * average + (1 - decay) * model, for every parameter and buffer."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay = decay

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*model.parameters(), *model.buffers()]
        if len(averaged) != len(current):
            raise ValueError(
                f"update_parameters got a model with {len(current)} parameters and buffers; the "
                f"average holds {len(averaged)}. Pass the model the average was made from."
            )
        if self.n_averaged == 0:  # the first update copies the model, as AveragedModel's does
            torch._foreach_copy_(averaged, current)
        else:
            floats = [t.is_floating_point() for t in averaged]
            ints = [not f for f in floats]
            torch._foreach_lerp_(chosen(averaged, floats), chosen(current, floats), 1 - self.decay)
            # Integer buffers (BatchNorm's batch counts) as get_ema_multi_avg_fn averages them:
            # in floating point, then truncated back into the buffer.
            if any(ints):
                mixed = torch._foreach_add(
                    torch._foreach_mul(chosen(averaged, ints), self.decay),
                    torch._foreach_mul(chosen(current, ints), 1 - self.decay),
                )
                torch._foreach_copy_(chosen(averaged, ints), mixed)
        self.n_averaged += 1


def chosen(tensors: list[torch.Tensor], keep: list[bool]) -> list[torch.Tensor]:
    return [t for t, k in zip(tensors, keep, strict=True) if k]
