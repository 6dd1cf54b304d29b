"""Exception types of pocketflow-tf.

Every error raised on bad user input names the argument, echoes the value received and says
what is accepted, so that a user can fix the call without reading the source.

Example:
    >>> from pocketflow_tf import errors
    >>> try:
    ...     raise errors.InvalidArgumentError("nb_epochs_rat", -1, "a number > 0")
    ... except ValueError as e:
    ...     print(e)
    Invalid value for `nb_epochs_rat`: -1. Accepted: a number > 0.
"""

from __future__ import annotations

from typing import Any


class PocketFlowError(Exception):
    """Base class of every error raised by pocketflow-tf."""


class InvalidArgumentError(PocketFlowError, ValueError):
    """An argument has a value outside what is accepted.

    Args:
        name: Name of the argument (or flag) as the user wrote it.
        value: The value received; its ``repr`` is echoed in the message.
        accepted: Human-readable description of what is accepted.

    Example:
        >>> str(InvalidArgumentError("mode", "int4", "one of 'float', 'int8'"))
        "Invalid value for `mode`: 'int4'. Accepted: one of 'float', 'int8'."
    """

    def __init__(self, name: str, value: Any, accepted: str):
        self.name = name
        self.value = value
        self.accepted = accepted
        super().__init__(f"Invalid value for `{name}`: {value!r}. Accepted: {accepted}.")


class ModelLoadError(PocketFlowError):
    """A model file exists but cannot be read (corrupt, truncated, unsafe, unsupported).

    Example:
        >>> str(ModelLoadError("/tmp/m.keras", "the file is truncated"))
        "Cannot load model file '/tmp/m.keras': the file is truncated"
    """

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot load model file '{path}': {reason}")


class UnsupportedModelError(PocketFlowError, TypeError):
    """The model cannot be handled, e.g. a subclassed model where a layer graph is needed.

    Example:
        >>> raise UnsupportedModelError("subclassed models have no layer graph")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.UnsupportedModelError: subclassed models have no layer graph
    """


class DataError(PocketFlowError):
    """A data set is missing, malformed or inconsistent.

    Example:
        >>> str(DataError("labels and images differ in length: 10 vs 9"))
        'labels and images differ in length: 10 vs 9'
    """


class VerificationError(PocketFlowError):
    """An exported artefact failed verification against its Keras model; nothing was kept.

    Example:
        >>> str(VerificationError("top-1 agreement 0.91 < 0.99"))
        'top-1 agreement 0.91 < 0.99'
    """


class TrainingDivergedError(PocketFlowError, ArithmeticError):
    """Training went non-finite (NaN or inf loss or weights); no model was returned.

    Args:
        learner: The learner's name (e.g. ``"full-prec"``).
        phase: What was training, e.g. ``"fine-tuning"``.
        learning_rate: The (peak) learning rate of that training.
        epoch: The 1-based epoch it diverged in (``None``: seen after training).
        batch: The 1-based batch of that epoch (``None``: unknown).
        what: What was non-finite, e.g. ``"the loss became nan"``.

    Example:
        >>> print(TrainingDivergedError("full-prec", "fine-tuning", 1e6, epoch=1, batch=3,
        ...                             what="the loss became nan"))
        Learner 'full-prec' diverged while fine-tuning: the loss became nan at epoch 1, batch 3, with learning rate 1e+06. No model was returned (its weights would be NaN/inf). Lower the learning rate (e.g. TrainConfig(learning_rate=100000)), or check that the inputs are scaled (e.g. images in [0, 1]).
    """

    def __init__(
        self,
        learner: str,
        phase: str,
        learning_rate: float,
        *,
        epoch: int | None = None,
        batch: int | None = None,
        what: str = "the weights became NaN or inf",
    ):
        self.learner = learner
        self.phase = phase
        self.learning_rate = float(learning_rate)
        self.epoch = epoch
        self.batch = batch
        where = ""
        if epoch is not None:
            where = f" at epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
        super().__init__(
            f"Learner '{learner}' diverged while {phase}: {what}{where}, with learning rate "
            f"{self.learning_rate:g}. No model was returned (its weights would be NaN/inf). "
            f"Lower the learning rate (e.g. TrainConfig(learning_rate={self.learning_rate / 10:g})"
            "), or check that the inputs are scaled (e.g. images in [0, 1])."
        )
