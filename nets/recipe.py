"""The :class:`Recipe`: a model builder, its data set and its full training recipe.

Example:
    >>> from pocketflow_tf.nets import recipe
    >>> r = recipe.get_recipe("convnet_at_fmnist")
    >>> r.train_config(nb_epochs_rat=0.5).epochs >= 1
    True
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable

from pocketflow_tf import errors, options, training
from pocketflow_tf.compat import keras

#: Module names of the recipes shipped in ``nets/``.
RECIPES = (
    "convnet_at_fmnist",
    "resnet_at_fmnist",
    "mobilenet_at_fmnist",
    "resnet_at_cifar10",
    "lenet_at_cifar10",
)


#: Fine-tuning a trained model runs at this fraction of the recipe's peak learning rate.
FINETUNE_LR_FACTOR = 0.1


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A model and how to train it on its data set.

    Attributes:
        name: ``<model>_at_<dataset>``.
        dataset: Data set name understood by :func:`pocketflow_tf.datasets.load_dataset`.
        build: ``build(input_shape, num_classes, **options) -> keras.Model`` (logits out).
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


def get_recipe(name: str) -> Recipe:
    """Imports ``pocketflow_tf.nets.<name>`` and returns its ``RECIPE``.

    Example:
        >>> get_recipe("vgg_at_fmnist")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `recipe`: 'vgg_at_fmnist'. Accepted: one of ('convnet_at_fmnist', 'resnet_at_fmnist', 'mobilenet_at_fmnist', 'resnet_at_cifar10', 'lenet_at_cifar10').
    """
    if name not in RECIPES:
        raise errors.InvalidArgumentError("recipe", name, f"one of {RECIPES}")
    return importlib.import_module(f"pocketflow_tf.nets.{name}").RECIPE
