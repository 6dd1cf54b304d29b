"""How long the final fine-tune trains, and how a trial's short fine-tune predicts it.

The final build of ``auto`` fine-tunes the chosen candidate for as long as it needs and the
budget allows, and no longer:

* :func:`plan_epochs` -- how many epochs fit the time left, from the seconds per step a trial
  measured on the same kind of model (the learning-rate schedule then decays over epochs the
  run can actually finish);
* :class:`RecoveryStop` -- a Keras callback that scores the held-out split after every epoch
  and ends the fine-tune once the accuracy floor is reached (with a margin), once it has
  stopped improving, or when the deadline passes; the best epoch's weights are kept;
* :func:`extrapolate` -- the accuracy a candidate should reach after the final fine-tune,
  from the learning curve of its own short fine-tune, so the search ranks candidates by what
  they can recover rather than by where 200 steps left them.

Example:
    >>> plan_epochs(budget_s=600, s_per_step=0.05, steps_per_epoch=400, max_epochs=30)
    24
    >>> round(extrapolate([(50, 0.80), (100, 0.85), (200, 0.88)], 4000, ceiling=0.95), 3)
    0.944
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from pocketflow_tf import atomic_io, errors, training
from pocketflow_tf.compat import keras

#: Share of the time left the planned epochs may fill: per-epoch held-out scoring, the
#: export, verification and latency measurement come after them.
BUDGET_SHARE = 0.8

#: Epochs of the final fine-tune when nothing else bounds it: no wall budget (or no measured
#: training speed) and no ``auto_final_epochs``.
UNBUDGETED_EPOCHS = 30

#: Files of a :class:`RecoveryStop`'s ``state_dir``.
STATE_FILE = "recovery.json"
BEST_WEIGHTS_FILE = "best-epoch-{epoch}.weights.h5"

#: The learning-curve model of :func:`extrapolate`: accuracy approaches its limit as
#: ``a_inf - b / steps**EXPONENT``. 0.5 is the rate of SGD on a convex loss; a fitted exponent
#: from 3-4 noisy points swings wildly, a fixed one only scales the gap, and ranking (what the
#: search needs) depends little on it.
EXPONENT = 0.5


def plan_epochs(
    *,
    budget_s: float | None,
    s_per_step: float | None,
    steps_per_epoch: int,
    max_epochs: int | None,
) -> int:
    """Epochs of the final fine-tune: as many as fit :data:`BUDGET_SHARE` of the time left, at
    least 1 and at most ``max_epochs``.

    Args:
        budget_s: Seconds left for the final build (``None``: no wall budget).
        s_per_step: Measured training seconds per step (``None``: unknown; then
            ``max_epochs``, and the deadline of :class:`RecoveryStop` guards the budget).
        steps_per_epoch: Steps of one epoch.
        max_epochs: The most epochs allowed (``None``: what the budget allows; without a
            budget or a measured speed, :data:`UNBUDGETED_EPOCHS`).

    Example:
        >>> plan_epochs(budget_s=None, s_per_step=0.1, steps_per_epoch=100, max_epochs=8)
        8
        >>> plan_epochs(budget_s=5, s_per_step=0.1, steps_per_epoch=100, max_epochs=8)
        1
        >>> plan_epochs(budget_s=1000, s_per_step=0.1, steps_per_epoch=100, max_epochs=None)
        80
        >>> plan_epochs(budget_s=None, s_per_step=0.1, steps_per_epoch=100, max_epochs=None)
        30
    """
    if budget_s is None or not s_per_step or s_per_step <= 0:
        return int(UNBUDGETED_EPOCHS if max_epochs is None else max_epochs)
    fits = max(1, math.floor(budget_s * BUDGET_SHARE / (s_per_step * max(1, steps_per_epoch))))
    return int(fits if max_epochs is None else min(max_epochs, fits))


def extrapolate(
    curve: Sequence[tuple[int, float]], steps: int, *, ceiling: float | None = None
) -> float:
    """The accuracy after ``steps`` fine-tuning steps, from ``(step, accuracy)`` points.

    Fits ``acc = a_inf - b / step**EXPONENT`` by least squares. The prediction is never below
    the last measured accuracy (more fine-tuning at a decaying rate does not undo what was
    learned) and never above ``ceiling`` (a distilled student rarely beats its teacher).
    With fewer than two points, or a curve that does not rise, the last accuracy is returned.

    Args:
        curve: Measured points, in step order (steps > 0).
        steps: Where to predict (the final fine-tune's step count).
        ceiling: Upper bound (the dense model's accuracy).

    Example:
        >>> extrapolate([(100, 0.7)], 1000)
        0.7
        >>> extrapolate([(100, 0.9), (200, 0.8)], 1000)  # falling: no extrapolation
        0.8
        >>> extrapolate([(50, 0.5), (100, 0.6), (200, 0.7)], 10**6, ceiling=0.85)
        0.85
    """
    points = [(float(s), float(a)) for s, a in curve if s > 0]
    if not points:
        raise errors.InvalidArgumentError("curve", list(curve), "(step > 0, accuracy) points")
    last = points[-1][1]
    if len(points) < 2 or steps <= points[-1][0]:
        return last
    t = np.array([p[0] for p in points]) ** -EXPONENT
    a = np.array([p[1] for p in points])
    slope, intercept = np.polyfit(t, a, 1)  # a = intercept + slope * t; slope = -b
    if slope >= 0:  # not rising with more steps: nothing to extrapolate
        return last
    predicted = float(intercept + slope * steps**-EXPONENT)
    predicted = max(predicted, last)
    return min(predicted, ceiling) if ceiling is not None else predicted


class RecoveryStop(keras.callbacks.Callback):
    """Ends a fine-tune at the accuracy floor, at a plateau or at the deadline.

    After every epoch the student (the model being trained; through a distillation wrapper,
    its ``student``) is scored on the held-out split. Training stops when:

    * ``"recovered"``: the accuracy reached ``floor``;
    * ``"plateau"``: it has not improved for ``patience`` epochs;
    * ``"budget"``: the deadline passed (checked after every step once the first epoch is
      done: a pruned model is never returned without any fine-tuning), or the next epoch
      would end after it (from the epochs timed so far).

    At the end the best epoch's weights are restored when the last epoch was worse. Before
    ``min_epochs`` epochs nothing stops training and no epoch counts as the best (a schedule
    that must finish, e.g. gradual weight sparsity reaching its target).

    With ``state_dir`` the callback survives a kill as the training's per-epoch backup does:
    after every epoch it writes its curve and best epoch there (and the best epoch's weights
    when they change), each file atomically, and a fit that resumes from the backup resumes
    them too, so the resumed run still ends with the best epoch's weights and reports every
    epoch. An epoch trained again after a kill (killed after this state was written, before
    the backup) replaces its earlier point. The caller removes ``state_dir`` with the backup.

    Args:
        x: Held-out images.
        y: Their integer labels.
        floor: Accuracy to reach (in ``[0, 1]``; ``None``: never stop for it).
        patience: Epochs without improvement before stopping (``None``: never).
        deadline: ``time.time()`` at which to stop (``None``: none).
        min_epochs: Epochs that always run (at least 1).
        batch_size: Scoring batch size.
        say: Progress lines (``None``: silent).
        clock: Time source (tests).
        state_dir: Folder for the resumable state (``None``: kept in memory only).

    Attributes:
        reason: Why training ended (``"recovered"``, ``"plateau"``, ``"budget"`` or
            ``"epochs"`` when it ran every planned epoch).
        curve: ``(epoch, held-out accuracy, seconds since start)`` per epoch.
        best_epoch: The epoch whose weights the model ends with (1-based).
        best_acc: Its held-out accuracy.

    Example:
        >>> import numpy as np
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> x = np.random.default_rng(0).random((64, 4)).astype("float32")
        >>> y = (x[:, 0] > 0.5).astype("int64")
        >>> stop = RecoveryStop(x, y, floor=0.0, patience=3, deadline=None)
        >>> _ = m.fit(x, y, epochs=5, verbose=0, callbacks=[stop])
        >>> stop.reason, len(stop.curve)
        ('recovered', 1)
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        floor: float | None,
        patience: int | None,
        deadline: float | None,
        min_epochs: int = 1,
        batch_size: int = 256,
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        state_dir: str | None = None,
    ):
        super().__init__()
        self.x, self.y = x, np.asarray(y).reshape(-1)
        self.floor, self.patience, self.deadline = floor, patience, deadline
        self.min_epochs = max(1, int(min_epochs))
        self.batch_size, self.say, self.clock = batch_size, say, clock
        self.reason = "epochs"
        self.curve: list[tuple[int, float, float]] = []
        self.best_epoch: int | None = None
        self.best_acc = -1.0
        self._best_weights: list[np.ndarray] | None = None
        self._t0 = clock()
        self.state_dir = state_dir
        self._offset = 0.0  # seconds of the epochs before a resume
        self._resumed_at = 0  # epochs on the curve before this fit began

    @property
    def student(self) -> keras.Model:
        """The model whose accuracy counts (the distillation wrapper's student, if any).

        Example:
            >>> RecoveryStop(np.zeros((1, 2)), [0], floor=None, patience=None,
            ...              deadline=None).reason
            'epochs'
        """
        return getattr(self.model, "student", self.model)

    def on_train_begin(self, logs=None):
        self._t0 = self.clock()
        self._load_state()

    def _best_path(self, epoch: int) -> str:
        # One file per best epoch, named by it: the state names the file it goes with, so a
        # kill between writing the weights and the state cannot pair one epoch's weights with
        # another's accuracy.
        return os.path.join(self.state_dir, BEST_WEIGHTS_FILE.format(epoch=epoch))

    def _load_state(self) -> None:
        """Takes up the curve and best epoch a killed fit left in ``state_dir``."""
        if not self.state_dir:
            return
        try:
            with open(os.path.join(self.state_dir, STATE_FILE)) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return  # nothing stored (or unreadable): a fresh start
        self.curve = [(int(e), float(a), float(t)) for e, a, t in state.get("curve", [])]
        self._offset = self.curve[-1][2] if self.curve else 0.0
        self._resumed_at = len(self.curve)
        if state.get("stopped"):
            self.reason = str(state["stopped"])
        best = state.get("best_epoch")
        if best is not None and os.path.exists(self._best_path(int(best))):
            self.best_epoch, self.best_acc = int(best), float(state["best_acc"])
        if self.say and self.curve:
            self.say(
                f"final fine-tune resumed after epoch {self.curve[-1][0]}"
                + (f" (best so far: epoch {self.best_epoch})" if self.best_epoch else "")
            )

    def _save_state(self, new_best: bool) -> None:
        if not self.state_dir:
            return
        if new_best:
            # The weights first: a state naming a best epoch always has its weights on disk.
            with atomic_io.atomic_path(self._best_path(self.best_epoch), ".weights.h5") as tmp:
                self.student.save_weights(tmp)
        atomic_io.write_json(
            os.path.join(self.state_dir, STATE_FILE),
            {
                "curve": [list(p) for p in self.curve],
                "best_epoch": self.best_epoch,
                "best_acc": None if self.best_epoch is None else self.best_acc,
                # Why training ended, once it has: a resume must not train on past it.
                "stopped": self.reason if self.model.stop_training else None,
                # The fit's planned epochs: a resume keeps the schedules they set.
                "epochs": (getattr(self, "params", None) or {}).get("epochs"),
            },
        )
        keep = os.path.basename(self._best_path(self.best_epoch or 0))
        for name in os.listdir(self.state_dir):
            if name.startswith("best-epoch-") and name != keep:
                os.remove(os.path.join(self.state_dir, name))

    def on_train_batch_end(self, batch, logs=None):
        done = len(self.curve) >= self.min_epochs
        if done and self.deadline is not None and self.clock() >= self.deadline:
            self._stop("budget")

    def on_epoch_end(self, epoch, logs=None):
        student = self.student
        acc = training.evaluate_accuracy(student, self.x, self.y, batch_size=self.batch_size)
        elapsed = self._offset + self.clock() - self._t0
        # An epoch trained again after a kill replaces its earlier point.
        self.curve = [p for p in self.curve if p[0] < epoch + 1]
        self.curve.append((epoch + 1, acc, round(elapsed, 1)))
        if self.say:
            self.say(f"final fine-tune epoch {epoch + 1}: held-out accuracy {acc:.4f}")
        if epoch + 1 < self.min_epochs:
            self._save_state(new_best=False)
            return
        new_best = acc > self.best_acc
        if new_best:
            self.best_acc, self.best_epoch = acc, epoch + 1
            self._best_weights = student.get_weights()
        if self.floor is not None and acc >= self.floor:
            self._stop("recovered")
        elif self.patience is not None and epoch + 1 - self.best_epoch >= self.patience:
            self._stop("plateau")
        elif self.deadline is not None:
            per_epoch = (self.clock() - self._t0) / max(1, len(self.curve) - self._resumed_at)
            if self.clock() + per_epoch > self.deadline:
                self._stop("budget")
        self._save_state(new_best)

    def on_train_end(self, logs=None):
        worse = self.best_epoch is not None and self.curve and self.curve[-1][1] < self.best_acc
        if worse and self._best_weights is not None:
            self.student.set_weights(self._best_weights)
        elif worse and self.state_dir:  # the best epoch came before a resume
            path = self._best_path(self.best_epoch)
            last = self.student.get_weights()
            try:
                self.student.load_weights(path)
            except (OSError, ValueError) as e:
                self.student.set_weights(last)  # a load that failed partway set some layers
                # The file was written atomically, so only outside damage gets here; the
                # last epoch's weights are a working model, so keep them and say so rather
                # than lose the whole fine-tune at its very end.
                if self.say:
                    self.say(
                        f"could not load the best epoch's weights {path!r} ({e}); keeping "
                        f"the last epoch's ({self.curve[-1][1]:.4f})"
                    )
                self.best_epoch, self.best_acc = self.curve[-1][0], self.curve[-1][1]
                worse = False
        if worse and self.say:
            self.say(f"kept the weights of epoch {self.best_epoch} ({self.best_acc:.4f})")
        self._best_weights = None  # the model holds them now; free the copy

    def _stop(self, reason: str) -> None:
        if not self.model.stop_training:
            self.reason = reason
        self.model.stop_training = True

    def to_dict(self) -> dict:
        """JSON form for the report.

        Example:
            >>> RecoveryStop(np.zeros((1, 2)), [0], floor=0.9, patience=2,
            ...              deadline=None).to_dict()["reason"]
            'epochs'
        """
        return {
            "reason": self.reason,
            "floor": self.floor,
            "patience": self.patience,
            "min_epochs": self.min_epochs,
            "curve": [list(p) for p in self.curve],
            "best_epoch": self.best_epoch,
            "best_acc": None if self.best_epoch is None else self.best_acc,
        }


def resume_epochs(state_dir: str) -> int | None:
    """The epochs to give a fit that resumes the :class:`RecoveryStop` state in
    ``state_dir``: ``None`` when nothing is stored; the last epoch when training had
    stopped for good before a kill (``"recovered"``, ``"plateau"``: no epoch more); else the
    epochs the killed fit was planned with, so the learning-rate (and sparsity) schedules the
    backup's steps followed go on unchanged (the deadline still guards the budget).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> resume_epochs(d) is None
        True
        >>> _ = atomic_io.write_json(os.path.join(d, STATE_FILE),
        ...     {"curve": [[1, 0.8, 5.0], [2, 0.9, 10.0]], "epochs": 9, "stopped": "budget"})
        >>> resume_epochs(d)
        9
        >>> _ = atomic_io.write_json(os.path.join(d, STATE_FILE),
        ...     {"curve": [[1, 0.8, 5.0], [2, 0.9, 10.0]], "epochs": 9, "stopped": "recovered"})
        >>> resume_epochs(d)
        2
    """
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    curve = state.get("curve") or []
    if curve and state.get("stopped") in ("recovered", "plateau"):
        return int(curve[-1][0])
    epochs = state.get("epochs")
    return None if epochs is None else int(epochs)


class LearningCurve(keras.callbacks.Callback):
    """Scores the student at chosen steps of a short fine-tune, and times its steps.

    At each step of ``at`` the student is scored on ``x``/``y`` in inference mode, with its
    BatchNorm statistics first re-estimated on ``x_stats`` (and put back afterwards): a short
    fine-tune leaves the moving averages stale (see ``candidate.reestimate_batchnorm``), and
    stale statistics would make early points look worse than they are, hence a steeper curve
    and an over-optimistic :func:`extrapolate`.

    Training seconds per step exclude the first ``warmup`` steps (graph tracing) and the
    scoring itself.

    Args:
        x: Images scored (a fixed subset of the held-out split).
        y: Their labels.
        x_stats: Training images the BatchNorm statistics are re-estimated on.
        at: 1-based steps to score at.
        warmup: Steps left out of the timing.

    Attributes:
        points: ``(step, accuracy)`` per scored step.
        s_per_step: Measured training seconds per step (``None`` before enough steps).

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> x = np.random.default_rng(0).random((64, 4)).astype("float32")
        >>> y = (x[:, 0] > 0.5).astype("int64")
        >>> curve = LearningCurve(x, y, x, at=(2, 8), warmup=1)
        >>> _ = m.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[curve])
        >>> [s for s, _ in curve.points], curve.s_per_step > 0
        ([2, 8], True)
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_stats: np.ndarray,
        *,
        at: Sequence[int],
        warmup: int = 5,
    ):
        super().__init__()
        self.x, self.y, self.x_stats = x, np.asarray(y).reshape(-1), x_stats
        self.at, self.warmup = sorted({int(s) for s in at if s > 0}), int(warmup)
        self.points: list[tuple[int, float]] = []
        self.s_per_step: float | None = None
        self._step = 0
        self._timed = 0.0
        self._timed_steps = 0
        self._t = None

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step > self.warmup and self._t is not None:
            self._timed += time.perf_counter() - self._t
            self._timed_steps += 1
            self.s_per_step = self._timed / self._timed_steps
        if self._step in self.at:
            self.points.append((self._step, self.score()))

    def score(self) -> float:
        """The student's accuracy now, with exact BatchNorm statistics (restored after).

        Example:
            >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
            >>> c = LearningCurve(np.zeros((4, 2), "float32"), [0, 0, 0, 0],
            ...                   np.zeros((4, 2), "float32"), at=(1,))
            >>> c.set_model(m)
            >>> 0.0 <= c.score() <= 1.0
            True
        """
        from pocketflow_tf.learners.auto import candidate  # candidate imports this module

        student = getattr(self.model, "student", self.model)
        bns = [v for v in student.variables if "moving_" in v.name]
        saved = [v.numpy() for v in bns]
        candidate.reestimate_batchnorm(student, self.x_stats, max_batches=8)
        acc = training.evaluate_accuracy(student, self.x, self.y)
        for v, value in zip(bns, saved, strict=True):
            v.assign(value)
        return acc


__all__ = [
    "BUDGET_SHARE",
    "EXPONENT",
    "UNBUDGETED_EPOCHS",
    "LearningCurve",
    "RecoveryStop",
    "extrapolate",
    "plan_epochs",
    "resume_epochs",
]
