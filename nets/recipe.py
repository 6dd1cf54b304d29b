"""The :class:`Recipe`: a model builder, its data set and its full training recipe.

Example:
    >>> from pocketflow_tf.nets import recipe
    >>> r = recipe.get_recipe("convnet_at_fmnist")
    >>> r.train_config(nb_epochs_rat=0.5).epochs >= 1
    True
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

from pocketflow_tf import errors, options, training
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import mobilenet, resnet, simple, userstyle

#: Fine-tuning a trained model runs at this fraction of the recipe's peak learning rate.
FINETUNE_LR_FACTOR = 0.1


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A model and how to train it on its data set.

    Attributes:
        name: ``<model>_at_<dataset>``.
        dataset: Data set name understood by :func:`pocketflow_tf.datasets.load_dataset`.
        build: ``build(input_shape, num_classes, **options) -> keras.Model`` (logits out,
            or a softmax head that the learners take off: :mod:`pocketflow_tf.heads`).
        train: The full training recipe (``nb_epochs_rat=1``).

    Example:
        >>> r = get_recipe("lenet_at_cifar10")
        >>> r.build((32, 32, 3), 10).output_shape
        (None, 10)
    """

    name: str
    dataset: str
    build: Callable[..., keras.Model]
    train: training.TrainConfig

    def train_config(self, nb_epochs_rat: float = 1.0, **changes) -> training.TrainConfig:
        """The training config with the epoch count scaled by ``nb_epochs_rat`` (>= 1 epoch).

        Example:
            >>> get_recipe("resnet_at_fmnist").train_config(0.2).epochs
            5
        """
        if not nb_epochs_rat > 0 or not math.isfinite(nb_epochs_rat):
            raise errors.InvalidArgumentError("nb_epochs_rat", nb_epochs_rat, "a number > 0")
        epochs = max(1, int(round(self.train.epochs * nb_epochs_rat)))
        return self.train.replace(**{"epochs": epochs, **changes})

    def finetune_config(
        self, nb_epochs_rat: float = 1.0, epochs: int | None = None, **changes
    ) -> training.TrainConfig:
        """The config for fine-tuning an already trained model (what every learner does).

        A tenth of the recipe's peak learning rate and no warm-up: the from-scratch peak rate
        and its warm-up would throw away much of what the model learned. ``epochs``, when
        given, replaces the scaled epoch count.

        Example:
            >>> cfg = get_recipe("resnet_at_fmnist").finetune_config(epochs=4)
            >>> cfg.epochs, cfg.warmup_epochs
            (4, 0.0)
        """
        if epochs is not None:
            epochs = options.check_integer("epochs", epochs, low=1)
        changes = {
            "learning_rate": self.train.learning_rate * FINETUNE_LR_FACTOR,
            "warmup_epochs": 0.0,
            **({"epochs": epochs} if epochs is not None else {}),
            **changes,
        }
        return self.train_config(nb_epochs_rat, **changes)


# -- the recipes shipped (one run script each: nets/<name>_run.py) --------------------------

#: Per-channel normalisation of each data set's images (scaled to [0, 1]).
FMNIST_NORM = {"mean": 0.2860, "std": 0.3530}
CIFAR10_NORM = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}


def sgd_cosine(
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 0.05,
    weight_decay: float = 5e-4,
    warmup_epochs: float = 0.0,
    pad: int = 0,
) -> training.TrainConfig:
    """A full recipe: Nesterov SGD with cosine decay, random horizontal flips and, with
    ``pad``, random crops shifted by up to ``pad`` pixels.

    Example:
        >>> cfg = sgd_cosine(24, 256, 0.2, warmup_epochs=1.0, pad=2)
        >>> cfg.lr_schedule, cfg.augmentation.pad, cfg.augmentation.flip
        ('cosine', 2, True)
    """
    return training.TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        lr_schedule="cosine",
        warmup_epochs=warmup_epochs,
        augmentation=training.Augmentation(pad=pad, flip=True),
    )


def _normalised(build: Callable[..., keras.Model], norm: dict) -> Callable[..., keras.Model]:
    """``build`` with the data set's normalisation (a Rescaling layer inside the model)."""
    return functools.partial(build, **norm)


_SHIPPED = (
    # A 2-conv ConvNet: the fast model for smoke runs and multi-worker tests.
    Recipe("convnet_at_fmnist", "fmnist", _normalised(simple.build_convnet, FMNIST_NORM),
           sgd_cosine(15)),
    # ResNet-20/32/44/56. Batch 256 trains about 30 % more images per second than 128
    # on a 2-core CPU (measured); the learning rate is scaled with it.
    Recipe("resnet_at_fmnist", "fmnist", _normalised(resnet.build_resnet, FMNIST_NORM),
           sgd_cosine(24, 256, 0.2, warmup_epochs=1.0, pad=2)),
    # MobileNet v1 (depthwise-separable) or v2 (inverted residual); weight decay 4e-5:
    # depthwise kernels overfit less than they underfit.
    Recipe("mobilenet_at_fmnist", "fmnist", _normalised(mobilenet.build_mobilenet, FMNIST_NORM),
           sgd_cosine(30, learning_rate=0.1, weight_decay=4e-5, warmup_epochs=1.0, pad=2)),
    # A functional model as a user writes one (Concatenate, Add, depthwise, SE Multiply,
    # softmax head): the test of compressing "your own model"; small, so 15 epochs.
    Recipe("userstyle_at_fmnist", "fmnist", _normalised(userstyle.build_userstyle, FMNIST_NORM),
           sgd_cosine(15, 256, 0.1, warmup_epochs=1.0, pad=2)),
    # He et al. 2016 with cosine instead of steps, from a user-given CIFAR-10 folder.
    Recipe("resnet_at_cifar10", "cifar10", _normalised(resnet.build_resnet, CIFAR10_NORM),
           sgd_cosine(160, learning_rate=0.1, warmup_epochs=1.0, pad=4)),
    # LeNet-5 with ReLU and max pooling, as in PocketFlow's lenet_at_cifar10.
    Recipe("lenet_at_cifar10", "cifar10", _normalised(simple.build_lenet, CIFAR10_NORM),
           sgd_cosine(60)),
)  # fmt: skip


#: Names of the recipes shipped in ``nets/``, each with its run script.
RECIPES = tuple(r.name for r in _SHIPPED)


def get_recipe(name: str) -> Recipe:
    """The shipped recipe called ``name`` (one of :data:`RECIPES`).

    Example:
        >>> get_recipe("resnet_at_fmnist").build((28, 28, 1), 10, depth=20).name
        'resnet20'
        >>> get_recipe("vgg_at_fmnist")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `recipe`: 'vgg_at_fmnist'. Accepted: one of ('convnet_at_fmnist', 'resnet_at_fmnist', 'mobilenet_at_fmnist', 'userstyle_at_fmnist', 'resnet_at_cifar10', 'lenet_at_cifar10').
    """
    if name not in RECIPES:
        raise errors.InvalidArgumentError("recipe", name, f"one of {RECIPES}")
    return next(r for r in _SHIPPED if r.name == name)
