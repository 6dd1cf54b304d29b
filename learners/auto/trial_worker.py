"""The auto search's objective rebuilt in another process (``auto_trial_workers > 1``).

A parallel study's worker processes (:mod:`pocketflow_tf.hp_optimizers.parallel`) must build
the same :class:`~proxy.Proxy` the learner scores trials with, but the proxy holds Keras
models and arrays that exist only in the learner's process. :func:`write_bundle` writes them
to ``<auto_dir>/study/objective/`` (the two models as ``.keras`` files, everything else --
plan, facts, data split, reference, settings -- as one pickle) and returns the
``ObjectiveSpec`` the workers call: :func:`load_objective` on that folder.

The pickle is written by this learner for its own worker processes of the same install and
run: it is a hand-over between processes, not a file format (a rerun rewrites it).

Example:
    >>> spec = bundle_spec("/tmp/auto/study/objective")
    >>> spec.target, spec.kwargs
    ('pocketflow_tf.learners.auto.trial_worker:load_objective', {'folder': '/tmp/auto/study/objective'})
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any

from pocketflow_tf import atomic_io, model_io
from pocketflow_tf.compat import keras
from pocketflow_tf.hp_optimizers import parallel
from pocketflow_tf.learners.auto import candidate, proxy, recovery

STATE_FILE = "proxy.pickle"


def bundle_spec(folder: str) -> parallel.ObjectiveSpec:
    """The spec workers rebuild the objective of ``folder`` with.

    Example:
        >>> bundle_spec("b").kwargs
        {'folder': 'b'}
    """
    return parallel.ObjectiveSpec(
        "pocketflow_tf.learners.auto.trial_worker:load_objective", {"folder": folder}
    )


def final_steps(
    s_per_step: float | None,
    *,
    steps_per_epoch: int,
    max_epochs: int | None,
    budget_s: float | None,
) -> int:
    """The final fine-tune's step count for a training speed (``AutoLearner._final_steps``
    with its run's numbers bound, so that it pickles).

    Example:
        >>> final_steps(None, steps_per_epoch=10, max_epochs=3, budget_s=None)
        30
    """
    epochs = recovery.plan_epochs(
        budget_s=budget_s,
        s_per_step=s_per_step,
        steps_per_epoch=steps_per_epoch,
        max_epochs=max_epochs,
    )
    return epochs * steps_per_epoch


def write_bundle(
    folder: str, objective: proxy.Proxy, *, final_steps: tuple[int, int | None, float | None]
) -> parallel.ObjectiveSpec:
    """Writes what :func:`load_objective` needs to rebuild ``objective`` elsewhere.

    Args:
        folder: Where to write (created).
        objective: The learner's proxy.
        final_steps: ``(steps_per_epoch, max_epochs, budget_s)`` of the final fine-tune.

    Returns:
        The workers' ``ObjectiveSpec``.

    Example:
        >>> spec = write_bundle("runs/auto/study/objective", proxy_obj,
        ...                     final_steps=(10, 3, None))  # doctest: +SKIP
    """
    os.makedirs(folder, exist_ok=True)
    model_io.save_model(objective.dense, os.path.join(folder, "dense.keras"))
    model_io.save_model(objective.teacher, os.path.join(folder, "teacher.keras"))
    steps_per_epoch, max_epochs, budget_s = final_steps
    state = {
        "plan": objective.plan,
        "facts": objective.facts,
        "data": objective.data,
        "reference": objective.reference,
        "target": objective.target,
        "work_dir": objective.work_dir,
        "train_config": objective.train_config,
        "config": objective.config,
        "distill": objective.distill,
        "channel_round": objective.channel_round,
        "prune_seed": objective.prune_seed,
        "final_steps": {
            "steps_per_epoch": steps_per_epoch,
            "max_epochs": max_epochs,
            "budget_s": budget_s,
        },
    }
    atomic_io.write_bytes(os.path.join(folder, STATE_FILE), pickle.dumps(state, protocol=5))
    return bundle_spec(folder)


def load_objective(folder: str) -> proxy.Proxy:
    """The proxy :func:`write_bundle` wrote to ``folder`` (what a worker process calls).

    Example:
        >>> objective = load_objective("runs/auto/study/objective")  # doctest: +SKIP
    """
    with open(os.path.join(folder, STATE_FILE), "rb") as f:
        state: dict[str, Any] = pickle.load(f)  # noqa: S301  (our own hand-over, see above)
    # The models are this run's own copies of the user's (already loaded) model: trusted.
    dense = model_io.load_model(os.path.join(folder, "dense.keras"), trust_unsafe=True)
    teacher = model_io.load_model(os.path.join(folder, "teacher.keras"), trust_unsafe=True)
    keras.utils.set_random_seed(state["prune_seed"])  # as the learner seeds its own process
    return proxy.Proxy(
        dense,
        teacher,
        state["plan"],
        state["facts"],
        state["data"],
        state["reference"],
        state["target"],
        state["work_dir"],
        state["train_config"],
        state["config"],
        distill=state["distill"],
        cache=candidate.SensitivityCache(),
        channel_round=state["channel_round"],
        prune_seed=state["prune_seed"],
        final_steps=functools.partial(final_steps, **state["final_steps"]),
    )
