"""Training configuration and input pipeline shared by every learner.

A :class:`TrainConfig` is the typed, serialisable description of one (fine-)tuning run:
epochs, batch, optimiser, learning-rate schedule, weight decay, augmentation and seed.
Learners take one; run scripts build one from flags; nothing here reads global flags.

Example:
    >>> from pocketflow_tf import training
    >>> cfg = training.TrainConfig(epochs=2, batch_size=64, learning_rate=0.05)
    >>> cfg.to_dict()["lr_schedule"]
    'cosine'
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from pocketflow_tf import errors, heads, inputs
from pocketflow_tf.compat import keras, tf

#: Peak learning rate of a learner's fine-tune when no ``TrainConfig`` is given. A learner
#: compresses an already trained model, and :class:`TrainConfig`'s own 0.1 is a
#: from-scratch rate: one distilled epoch at 0.1 took a trained ConvNet on Fashion-MNIST to
#: 10 % (chance), at 0.01 it kept 90.89 % (the recipes' fine-tunes likewise take a tenth of
#: their training rate, ``Recipe.finetune_config``).
FINE_TUNE_LEARNING_RATE = 0.01

_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("cosine", "constant", "step")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Per-recipe training augmentation, applied on the fly in tf.data.

    Attributes:
        pad: Zero-pad each side by this many pixels, then randomly crop back (0 = off).
        flip: Random horizontal flips.

    Example:
        >>> Augmentation(pad=2, flip=True).pad
        2
    """

    pad: int = 0
    flip: bool = False

    def __post_init__(self):
        if int(self.pad) < 0:
            raise errors.InvalidArgumentError("pad", self.pad, "an integer >= 0")

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is applied."""
        return self.pad > 0 or self.flip


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to (fine-)tune a model.

    Attributes:
        epochs: Number of passes over the training data (>= 1).
        batch_size: Global batch size.
        learning_rate: Peak learning rate.
        optimizer: ``"sgd"`` (Nesterov momentum) or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: Decoupled weight decay on kernels (not on biases / BN parameters).
        lr_schedule: ``"cosine"`` (to 0), ``"constant"`` or ``"step"`` (x0.1 at 50 % and 75 %).
        warmup_epochs: Linear warm-up length in epochs (may be fractional).
        augmentation: Training augmentation.
        seed: Seed of shuffling, augmentation and initialisation.

    Example:
        >>> TrainConfig(epochs=0)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `epochs`: 0. Accepted: an integer >= 1.
    """

    epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    augmentation: Augmentation = Augmentation()
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.epochs, int | np.integer) or self.epochs < 1:
            raise errors.InvalidArgumentError("epochs", self.epochs, "an integer >= 1")
        if not isinstance(self.batch_size, int | np.integer) or self.batch_size < 1:
            raise errors.InvalidArgumentError("batch_size", self.batch_size, "an integer >= 1")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise errors.InvalidArgumentError("learning_rate", self.learning_rate, "a number > 0")
        if self.optimizer not in _OPTIMIZERS:
            raise errors.InvalidArgumentError("optimizer", self.optimizer, f"one of {_OPTIMIZERS}")
        if self.lr_schedule not in _SCHEDULES:
            raise errors.InvalidArgumentError(
                "lr_schedule", self.lr_schedule, f"one of {_SCHEDULES}"
            )
        if not 0 <= self.weight_decay < 1:
            raise errors.InvalidArgumentError(
                "weight_decay", self.weight_decay, "a number in [0, 1)"
            )
        if self.warmup_epochs < 0:
            raise errors.InvalidArgumentError("warmup_epochs", self.warmup_epochs, "a number >= 0")

    def replace(self, **changes: Any) -> TrainConfig:
        """Returns a copy with ``changes`` applied (validated again).

        Example:
            >>> TrainConfig().replace(epochs=3).epochs
            3
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain-dict form for records and JSON.

        Example:
            >>> TrainConfig().to_dict()["augmentation"]
            {'pad': 0, 'flip': False}
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> TrainConfig:
        """The inverse of :meth:`to_dict` (validated like any construction).

        Example:
            >>> cfg = TrainConfig(epochs=2, augmentation=Augmentation(pad=2))
            >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
            True
        """
        config = dict(config)
        aug = config.pop("augmentation", None)
        return cls(**config, augmentation=Augmentation(**(aug or {})))


def make_dataset(
    x: np.ndarray,
    y: np.ndarray | None,
    batch_size: int,
    *,
    training: bool = False,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    drop_remainder: bool = False,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Builds a batched tf.data pipeline over in-memory arrays.

    Training pipelines shuffle each epoch (seeded) and apply ``augmentation``; evaluation
    pipelines keep the order and never augment.

    Args:
        x: Images ``(N, H, W, C)`` float32 in ``[0, 1]``.
        y: Labels ``(N,)`` or ``None`` for inference.
        batch_size: Batch size.
        training: Shuffle and augment when True.
        augmentation: Augmentation to apply when training.
        seed: Seed of shuffling and augmentation.
        drop_remainder: Drop a short last batch (multi-worker training needs every worker
            to run the same number of steps).
        shard: ``(index, count)``: keep this worker's 1/count of the data (equal shares:
            the ``len(x) % count`` last samples are left out).

    Example:
        >>> import numpy as np
        >>> ds = make_dataset(np.zeros((5, 4, 4, 1), "float32"), np.zeros(5, "int64"), 2)
        >>> [int(b[0].shape[0]) for b in ds]
        [2, 2, 1]
    """
    if x is None or len(x) == 0:
        raise errors.InvalidArgumentError("x", None if x is None else x.shape, "a non-empty array")
    if y is not None and len(y) != len(x):
        raise errors.InvalidArgumentError(
            "y", f"{len(y)} labels", f"{len(x)} labels, one per image"
        )
    tensors = (x,) if y is None else (x, y)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    n = len(x)
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise errors.InvalidArgumentError(
                "shard", shard, "(index, count) with 0 <= index < count"
            )
        n = len(x) // count
        ds = ds.take(n * count).shard(count, index)
    if training:
        ds = ds.shuffle(min(n, 60000), seed=seed, reshuffle_each_iteration=True)
        if augmentation is not None and augmentation.enabled:
            # One seeded random stream zipped to the elements: each image gets its own
            # stateless seed, the same for a given seed and epoch, new at every epoch, and
            # independent of how many map calls run in parallel.
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)
            ds = tf.data.Dataset.zip((ds, seeds))
            aug = _augment_fn(augmentation, tuple(x.shape[1:]))
            ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _augment_fn(aug: Augmentation, shape: tuple[int, ...]):
    def fn(element, seeds):
        image, *rest = element
        seeds = tf.reshape(seeds, (2, 2))
        if aug.pad:
            image = tf.pad(image, [[aug.pad, aug.pad], [aug.pad, aug.pad], [0, 0]])
            image = tf.image.stateless_random_crop(image, shape, seed=seeds[0])
        if aug.flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return (image, *rest)

    return fn


def build_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Builds the optimiser with its learning-rate schedule for ``config``.

    Weight decay is decoupled (AdamW/SGDW style) and skips biases and BatchNorm parameters,
    so it works the same on any user model without adding regularisers to its layers.

    Example:
        >>> opt = build_optimizer(TrainConfig(epochs=2), steps_per_epoch=10)
        >>> type(opt).__name__
        'SGD'
    """
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    schedule = _Schedule(config.learning_rate, total, warmup, config.lr_schedule)
    kwargs = {"learning_rate": schedule}
    if config.weight_decay:
        kwargs["weight_decay"] = config.weight_decay
    if config.optimizer == "sgd":
        opt = keras.optimizers.SGD(momentum=config.momentum, nesterov=True, **kwargs)
    else:
        opt = keras.optimizers.Adam(**kwargs)
    if config.weight_decay:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


# Registered so that a model saved while compiled (its optimizer holds this schedule) loads
# again with a plain `keras.models.load_model` once pocketflow_tf is imported.
@keras.utils.register_keras_serializable(package="pocketflow_tf", name="LRSchedule")
class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up followed by cosine / constant / step decay."""

    def __init__(self, peak: float, total: int, warmup: int, kind: str):
        self.peak, self.total, self.warmup, self.kind = float(peak), int(total), int(warmup), kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup, 1), tf.float32)
        span = tf.cast(max(self.total - self.warmup, 1), tf.float32)
        progress = tf.clip_by_value((step - self.warmup) / span, 0.0, 1.0)
        if self.kind == "cosine":
            lr = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "step":
            lr = self.peak * tf.where(progress < 0.5, 1.0, tf.where(progress < 0.75, 0.1, 0.01))
        else:
            lr = tf.constant(self.peak)
        if self.warmup > 0:
            lr = tf.where(step < self.warmup, self.peak * (step + 1.0) / warm, lr)
        return lr

    def get_config(self):
        return {"peak": self.peak, "total": self.total, "warmup": self.warmup, "kind": self.kind}


class DivergenceGuard(keras.callbacks.Callback):
    """Stops a training whose loss became NaN or inf, with a clear error.

    Like ``keras.callbacks.TerminateOnNaN``, but it raises instead of stopping quietly: a
    stopped ``fit`` would hand back (and back up) NaN weights. At each epoch's end it also
    checks the weights (the last update can overflow them with a finite loss). Placed before
    a backup callback, it keeps the last backup a finite one, which a rerun at a lower rate
    resumes from. Every learner's training runs with one (see
    :meth:`pocketflow_tf.learner.Learner.fit`).

    Args:
        learner: The learner's name, for the error.
        learning_rate: The training's (peak) learning rate, for the error.
        phase: What is training, e.g. ``"fine-tuning"``.

    Raises:
        TrainingDivergedError: From ``fit``, naming the learner, the epoch, the batch and
            the learning rate.

    Example:
        >>> import numpy as np
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> m.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> x = np.full((4, 2), np.inf, np.float32)
        >>> m.fit(x, np.zeros(4), verbose=0, callbacks=[DivergenceGuard("full-prec", 0.01)])
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.TrainingDivergedError: Learner 'full-prec' diverged while fine-tuning: the loss became nan at epoch 1, batch 1, with learning rate 0.01. ...
    """

    #: Batches between two looks at the loss: reading it waits for the step to finish (a
    #: device sync on GPU), so not every batch; the epoch's mean loss, checked at its end,
    #: is NaN once any batch's was.
    EVERY = 20

    def __init__(self, learner: str, learning_rate: float, phase: str = "fine-tuning"):
        super().__init__()
        self.learner, self.learning_rate, self.phase = learner, float(learning_rate), phase
        self._epoch = 0
        # Logs stay tensors (Keras would otherwise convert them to numpy after every batch).
        self._supports_tf_logs = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._check_loss(logs, epoch + 1)
        check_finite(
            self.model,
            learner=self.learner,
            learning_rate=self.learning_rate,
            phase=self.phase,
            epoch=epoch + 1,
        )

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.EVERY == 0:
            self._check_loss(logs, self._epoch + 1, batch + 1)

    def _check_loss(self, logs, epoch: int, batch: int | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise errors.TrainingDivergedError(
                self.learner,
                self.phase,
                self.learning_rate,
                epoch=epoch,
                batch=batch,
                what=f"the loss became {float(loss)}",
            )


def check_finite(
    model: keras.Model,
    *,
    learner: str,
    learning_rate: float,
    phase: str,
    epoch: int | None = None,
) -> None:
    """Raises when ``model``'s weights hold NaN or inf after a training (``phase``, which
    was at ``epoch`` when given).

    The loss can stay finite while the last update overflows the weights; this is the
    check that no learner returns such a model.

    Raises:
        TrainingDivergedError: Naming the learner, the phase, the learning rate and the
            non-finite weights.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="fc")])
        >>> check_finite(m, learner="full-prec", learning_rate=0.01, phase="fine-tuning")
        >>> m.layers[0].bias.assign([float("inf"), 0.0])  # doctest: +ELLIPSIS
        <...>
        >>> check_finite(m, learner="full-prec", learning_rate=0.01, phase="fine-tuning")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.TrainingDivergedError: Learner 'full-prec' diverged while fine-tuning: the weights fc/bias:0 became NaN or inf, with learning rate 0.01. ...
    """
    bad = inputs.nonfinite_weights(model)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise errors.TrainingDivergedError(
            learner,
            phase,
            learning_rate,
            epoch=epoch,
            what=f"the weights {shown} became NaN or inf",
        )


def evaluate_accuracy(
    model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256
) -> float:
    """Top-1 accuracy of a logits (or probabilities) model on arrays.

    Example:
        >>> import numpy as np
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> 0.0 <= evaluate_accuracy(m, np.zeros((4, 2), "float32"), np.zeros(4)) <= 1.0
        True
    """
    # The input contract: a model with 5 outputs scored on 10 classes, or labels out of
    # range, would otherwise give a meaningless accuracy without a word.
    x, y = inputs.arrays(model, x, y)
    logits = model.predict(make_dataset(x, None, batch_size), verbose=0)
    return float(np.mean(heads.predicted_classes(logits, heads.threshold(model)) == y))
