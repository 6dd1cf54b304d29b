"""Trains (or reuses) the full-recipe baselines that every benchmark compares against.

A baseline is cached under ``bench/artifacts/<recipe>_e<epochs>_s<seed>.keras`` (committed
with its ``.json`` metadata: training ResNet-20 takes about two hours on 2 cores), so the
benchmarks of later issues reuse it instead of retraining. Training writes per-epoch backups, so a killed
run started again resumes from its last finished epoch.

Example:
    >>> from bench import baselines
    >>> baselines.artifact_path("resnet_at_fmnist", 25, 0).endswith("resnet_at_fmnist_e25_s0.keras")
    True
"""

from __future__ import annotations

import json
import os
import time

from pocketflow_tf import atomic_io, datasets, errors, learner, training
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import recipe

ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")


def parse_recipes(knob: str, text: str) -> list[str]:
    """The recipes of a benchmark's comma-list knob, each checked before any training.

    Example:
        >>> parse_recipes("PFTF_MP_RECIPES", "resnet_at_fmnist, mobilenet_at_fmnist")
        ['resnet_at_fmnist', 'mobilenet_at_fmnist']
        >>> parse_recipes("PFTF_MP_RECIPES", "resnet_at_fmnist,vgg")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `PFTF_MP_RECIPES`: 'vgg'. Accepted: one of ('convnet_at_fmnist', 'resnet_at_fmnist', ...).
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise errors.InvalidArgumentError(knob, text, f"one or more of {recipe.RECIPES}")
    for name in names:
        if name not in recipe.RECIPES:
            raise errors.InvalidArgumentError(knob, name, f"one of {recipe.RECIPES}")
    return names


def artifact_path(recipe_name: str, epochs: int, seed: int) -> str:
    """Where the baseline of ``recipe_name`` trained for ``epochs`` with ``seed`` is cached."""
    return os.path.join(ARTIFACTS, f"{recipe_name}_e{epochs}_s{seed}.keras")


def full_recipe_path(recipe_name: str, seed: int = 0) -> str:
    """Where :func:`train_or_load` caches the full-recipe baseline of ``recipe_name``.

    Example:
        >>> full_recipe_path("resnet_at_fmnist").endswith("resnet_at_fmnist_e24_s0.keras")
        True
    """
    epochs = recipe.get_recipe(recipe_name).train_config(1.0, seed=seed).epochs
    return artifact_path(recipe_name, epochs, seed)


def train_or_load(
    recipe_name: str, nb_epochs_rat: float = 1.0, seed: int = 0, data=None, **build_options
) -> tuple[keras.Model, dict]:
    """Returns the trained baseline model and its training metadata (wall time, epochs).

    Example:
        >>> model, meta = train_or_load("convnet_at_fmnist", 0.07)  # doctest: +SKIP
    """
    import pocketflow_tf.learners  # noqa: F401  (registers the learners)

    rec = recipe.get_recipe(recipe_name)
    cfg = rec.train_config(nb_epochs_rat, seed=seed)
    path = artifact_path(recipe_name, cfg.epochs, seed)
    meta_path = path + ".json"
    if os.path.exists(path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            return keras.models.load_model(path, compile=False), json.load(f)
    data = data or datasets.load_dataset(rec.dataset)
    model = rec.build(data.input_shape, data.num_classes, **build_options)
    fp = learner.get_learner_class("full-prec")(cfg, checkpoint_dir=path + ".ckpt", verbose=2)
    start = time.time()
    trained = fp.fit(model, data.x_train, data.y_train, validation_data=(data.x_test, data.y_test))
    meta = {
        "recipe": recipe_name,
        "train": cfg.to_dict(),
        "train_wall_s": round(time.time() - start, 1),
        "history": {k: [float(v) for v in vs] for k, vs in fp.history.history.items()},
    }
    with atomic_io.atomic_path(path) as tmp:
        # An uncompiled copy has no optimizer state: a third of the size, and it is committed.
        learner.copy_model(trained).save(tmp)
    atomic_io.write_json(meta_path, meta)
    return trained, meta


def scored(recipe_name: str, data) -> tuple[keras.Model, float]:
    """The trained baseline (:func:`train_or_load`, full recipe, seed 0) and its Keras
    accuracy on ``data``'s test split: what every benchmark compares against.

    Example:
        >>> dense, acc_dense = scored("resnet_at_fmnist", data)  # doctest: +SKIP
    """
    model, _ = train_or_load(recipe_name)
    return model, training.evaluate_accuracy(model, data.x_test, data.y_test)


if __name__ == "__main__":
    import sys

    name = sys.argv[1]
    rat = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    m, meta = train_or_load(name, rat)
    data = datasets.load_dataset(recipe.get_recipe(name).dataset)
    print(
        name,
        "test acc",
        training.evaluate_accuracy(m, data.x_test, data.y_test),
        meta["train_wall_s"],
    )
