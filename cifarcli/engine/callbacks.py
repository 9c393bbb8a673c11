"""The hooks the epoch loop calls (the progress display, the TensorBoard logger).

Kept apart from the loop so that the command layer can build its display without importing
torch: the types below are annotations only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from cifarcli.engine.loop import StepLoss, TrainState
    from cifarcli.engine.predict import Predictions


class TrainCallbacks:
    """Hooks the epoch loop calls; the display and the TensorBoard logger override what they need."""

    def on_train_start(self, state: TrainState, epochs: int, steps_per_epoch: int) -> None: ...
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...
    def on_step(self, step: int, lr: float) -> None: ...  # every train.progress_every_steps: host values only
    def on_losses(self, losses: list[StepLoss]) -> None: ...  # the steps read back at one sync
    def on_validation(self, epoch: int, predictions: Predictions) -> None: ...  # the epoch's validation pass (raw weights)
    def on_epoch_end(self, row: dict[str, float], is_best: bool) -> None: ...
    def on_train_end(self) -> None: ...


class CallbackList(TrainCallbacks):
    """Fan every hook out to several callbacks, in order."""

    def __init__(self, callbacks: Iterable[TrainCallbacks]) -> None:
        self.callbacks = list(callbacks)

    def on_train_start(self, state: TrainState, epochs: int, steps_per_epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_train_start(state, epochs, steps_per_epoch)

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_start(epoch, steps)

    def on_step(self, step: int, lr: float) -> None:
        for cb in self.callbacks:
            cb.on_step(step, lr)

    def on_losses(self, losses: list[StepLoss]) -> None:
        for cb in self.callbacks:
            cb.on_losses(losses)

    def on_validation(self, epoch: int, predictions: Predictions) -> None:
        for cb in self.callbacks:
            cb.on_validation(epoch, predictions)

    def on_epoch_end(self, row: dict[str, float], is_best: bool) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(row, is_best)

    def on_train_end(self) -> None:
        for cb in self.callbacks:
            cb.on_train_end()
