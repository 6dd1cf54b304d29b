"""The ``Learner`` contract and the learner registry.

A learner follows TFMOT's wrap -> train with callbacks -> strip pattern:

1. :meth:`Learner.prepare` turns the user's model into a trainable one (a copy: the user's
   model is never modified; compression learners wrap or rebuild layers here);
2. :meth:`Learner.callbacks` supplies the callbacks the method needs;
3. :meth:`Learner.fit` fine-tunes, optionally distilled from a teacher (by default a frozen
   copy of the input model);
4. :meth:`Learner.finalize` returns a deployable, wrapper-free Keras model.

Learners register under their PocketFlow names (``full-prec``, ``channel``, ...) so run
scripts and the automated search can look them up by name.

Example:
    >>> from pocketflow_tf import learner
    >>> import pocketflow_tf.learners  # registers the built-in learners
    >>> learner.get_learner_class("full-prec").__name__
    'FullPrecLearner'
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from typing import Any, ClassVar

import numpy as np

from pocketflow_tf import (
    atomic_io,
    cli_errors,
    distillation,
    distributed,
    ecq,
    errors,
    graph_rebuild,
    heads,
    inputs,
    interop,
    model_io,
    options,
    shards,
    training,
)
from pocketflow_tf.compat import keras, tf

_REGISTRY: dict[str, type[Learner]] = {}
_CANONICAL: dict[str, str] = {}

#: PocketFlow learner names whose implementation is tracked by an open issue; asking for one
#: gives a message saying so rather than a bare "unknown learner".
PLANNED: dict[str, str] = {}


def register(name: str, *aliases: str):
    """Class decorator registering a learner under ``name`` and ``aliases``.

    Example:
        >>> @register("my-learner")
        ... class MyLearner(Learner):
        ...     pass
        >>> get_learner_class("my-learner") is MyLearner
        True
        >>> _ = _REGISTRY.pop("my-learner"), _CANONICAL.pop("my-learner")
    """

    def decorate(cls):
        for key in (name, *aliases):
            if key in _REGISTRY and not _same_definition(_REGISTRY[key], cls):
                raise errors.InvalidArgumentError(
                    "name", key, f"a learner name not already taken by {_REGISTRY[key].__name__}"
                )
            _REGISTRY[key] = cls
            _CANONICAL[key] = name
        cls.name = name
        return cls

    return decorate


def _same_definition(a: type, b: type) -> bool:
    """True for one class imported twice under two package names (``pytest
    --doctest-modules learners/`` imports ``learners.x.learner`` beside the installed
    ``pocketflow_tf.learners.x.learner``); that is not a name clash."""
    return a is b or (
        a.__qualname__ == b.__qualname__
        and a.__module__.split(".")[-2:] == b.__module__.split(".")[-2:]
    )


def available() -> list[str]:
    """Sorted canonical names of the registered learners.

    Example:
        >>> import pocketflow_tf.learners
        >>> "full-prec" in available()
        True
    """
    return sorted(set(_CANONICAL.values()))


def get_learner_class(name: str) -> type[Learner]:
    """Looks a learner class up by name or alias.

    Example:
        >>> get_learner_class("nope")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `learner`: 'nope'. Accepted: one of [...].
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in PLANNED:
        raise errors.InvalidArgumentError(
            "learner",
            name,
            f"one of {available()} (the '{name}' learner is not in this version yet; "
            f"it is tracked by {PLANNED[name]})",
        )
    raise errors.InvalidArgumentError("learner", name, f"one of {available()}")


def _aliases_of(cls: type[Learner]) -> list[str]:
    return [key for key, value in _REGISTRY.items() if value is cls]


def copy_model(model: keras.Model) -> keras.Model:
    """A structural copy of ``model`` with the same weights (the input stays untouched).

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> c = copy_model(m)
        >>> c is not m and np.allclose(c.get_weights()[0], m.get_weights()[0])
        True
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def checks_inputs(fit):
    """Decorates a learner's ``fit`` so that its data is checked before any work.

    The model, images, labels and validation data go through :mod:`pocketflow_tf.inputs`
    (converted: uint8 images scaled to ``[0, 1]``, one-hot labels to indices) once, at the
    outermost ``fit``; an override's ``super().fit(...)`` is not checked again. A Keras 3
    model (or teacher) is rebuilt in tf-keras and the result handed back in Keras 3
    (:mod:`pocketflow_tf.interop`); nested models are inlined
    (:func:`pocketflow_tf.graph_rebuild.inline_nested`). A model (or teacher) ending in a softmax is trained on its logits (:mod:`pocketflow_tf.heads`) and
    the softmax is put back on the returned model; :attr:`Learner.output_head` says which. Every
    subclass's ``fit`` is decorated automatically (``Learner.__init_subclass__``), so a
    learner cannot skip the contract by overriding ``fit``.

    Example:
        >>> import numpy as np
        >>> import pocketflow_tf.learners
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> get_learner_class("full-prec")().fit(m, np.zeros((8, 4)), np.arange(8))
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `y`: '5 label(s) outside [0, 3), first at index 3: 3'. Accepted: class indices 0..2 (the model has 3 outputs or the data set 3 classes).
    """
    if getattr(fit, "checks_inputs", False):
        return fit

    @functools.wraps(fit)
    def checked(self, model, x=None, y=None, **kwargs):
        if getattr(self, "_inputs_checked", False):
            return fit(self, model, x, y, **kwargs)
        # Output folders first: a folder that cannot be made would otherwise fail after
        # the work (or inside a callback) with a bare OSError.
        for name, path in self.output_dirs().items():
            if path:
                cli_errors.check_output_path(name, path, is_dir=True)
        # The caller's Keras is the answer's Keras: a Keras 3 model is rebuilt in tf-keras
        # here and the result rebuilt in Keras 3 at the end.
        inputs.built(model)
        model, came_as_keras3 = interop.to_framework(model)
        # Every learner rebuilds, clones or exports the model: it needs its layer graph.
        if isinstance(model, keras.Model):  # anything else is named below
            model_io.require_graph(model, f"learner '{self.name}'")
        # Every learner works on a flat model (a tf-keras nested one is inlined here, as
        # the bridge inlines a Keras 3 one): the channel graph and TFMOT see only layers,
        # and a size or bit report counts what is inside the nested model.
        model = graph_rebuild.inline_nested(model)
        x, y, kwargs = _checked_inputs(model, x, y, kwargs)
        # An open image size (Input((None, None, 3))) is taken at the data's size.
        data_shape = _sample_shape(x)
        if data_shape is not None:
            model = graph_rebuild.at_input_shape(model, data_shape)
        # Train and distil on logits, explicitly: a softmax head is taken off here and put
        # back on the result, so probabilities in means probabilities out.
        model, head = heads.split(model)
        teacher = self.teacher
        if teacher is not None:
            framework_teacher = interop.to_framework(teacher, name="teacher")[0]
            if not isinstance(framework_teacher, keras.Model):
                raise errors.InvalidArgumentError(
                    "teacher", type(teacher).__name__, "a keras.Model (tf-keras or Keras 3)"
                )
            inputs.finite_weights(framework_teacher, name="teacher")
            self.teacher = heads.split(framework_teacher)[0]
        self.output_head = head
        self._inputs_checked = True
        if self.checkpoint_dir:
            # What the backups of this run belong to: a rerun resumes only its own.
            self._run_identity = run_identity(self, model, x, y)
        try:
            result = fit(self, model, x, y, **kwargs)
        except tf.errors.OpError as e:
            # A later batch of a dataset failed its check (inputs.dataset): the same error
            # as for a bad first batch, not TensorFlow's op error from inside the graph.
            refused = inputs.batch_error(e)
            if refused is None:
                raise
            raise refused from None
        finally:
            self._inputs_checked = False
            self._run_identity = None
            self.teacher = teacher
        return interop.to_caller(heads.attach(result, head), came_as_keras3)

    checked.checks_inputs = True
    return checked


def _sample_shape(x: Any) -> tuple[int, ...] | None:
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec[0] if isinstance(x.element_spec, tuple) else x.element_spec
        dims = tuple(spec.shape[1:])
        return None if None in dims else tuple(int(d) for d in dims)
    return None if x is None else tuple(np.shape(x)[1:])


def _checked_inputs(model, x, y, kwargs: dict) -> tuple[Any, Any, dict]:
    """``fit``'s data checked and converted by the input contract (see :func:`checks_inputs`)."""
    if not isinstance(model, keras.Model):
        raise errors.InvalidArgumentError(
            "model", type(model).__name__, "a keras.Model (tf-keras or Keras 3)"
        )
    # NaN weights in would be blamed on the learner's training (its divergence check).
    inputs.finite_weights(model)
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise errors.InvalidArgumentError(
                "y", "an array", "None when x is a tf.data.Dataset (it yields (x, y))"
            )
        x = inputs.dataset(model, x)
    elif x is not None and y is not None:
        x, y = inputs.arrays(model, x, y)
    kwargs = dict(kwargs)
    val = kwargs.get("validation_data")
    if isinstance(val, tf.data.Dataset):
        kwargs["validation_data"] = inputs.dataset(model, val, name="validation_data")
    elif val is not None:
        if not isinstance(val, tuple | list) or len(val) != 2:
            raise errors.InvalidArgumentError(
                "validation_data", type(val).__name__, "(x_val, y_val) arrays or a tf.data.Dataset"
            )
        kwargs["validation_data"] = inputs.arrays(
            model, *val, names=("validation_data[0]", "validation_data[1]")
        )
    if kwargs.get("x_val") is not None or kwargs.get("y_val") is not None:
        for given, missing in (("x_val", "y_val"), ("y_val", "x_val")):
            if kwargs.get(missing) is None:
                raise errors.InvalidArgumentError(
                    missing,
                    None,
                    f"the {'labels' if missing == 'y_val' else 'images'} of {given}: "
                    "x_val and y_val are given together (or neither)",
                )
        kwargs["x_val"], kwargs["y_val"] = inputs.arrays(
            model, kwargs.get("x_val"), kwargs.get("y_val"), names=("x_val", "y_val")
        )
    return x, y, kwargs


class Learner:
    """Base class of every learner.

    Args:
        train_config: How to fine-tune; defaults to :class:`training.TrainConfig` at a
            fine-tuning rate (:data:`training.FINE_TUNE_LEARNING_RATE` times
            :attr:`finetune_lr_scale`), not its from-scratch 0.1: learners compress models
            that are already trained (to train from scratch, pass a ``TrainConfig``).
        distillation: Distillation settings; ``True`` distils with the default
            :class:`distillation.DistillationConfig`, ``None`` or ``False`` disables it.
        teacher: The teacher model; defaults to a frozen copy of the model given to
            :meth:`fit` (only used when ``distillation`` is set).
        log_dir: Folder for TensorBoard logs (``None``: no logs).
        checkpoint_dir: Folder for per-epoch backups; a run killed mid-way and started
            again with the same folder resumes from its last finished epoch.
        keep_backups: Keep the backups when :meth:`fit` returns, so that a kill while the
            caller saves or exports the result costs no epoch (a restarted ``fit`` finds
            every epoch done, trains none and returns the restored model); the caller
            then removes them with :meth:`release_backups` once its outputs are written.
            By default ``fit`` removes them itself (a later ``fit`` with the same folder
            then trains anew).
        verbose: Keras verbosity (0, 1 or 2).
        backend: The workers this process trains with (default: one process alone; see
            :mod:`pocketflow_tf.distributed`). ``train_config.batch_size`` is then the batch
            of one worker and the learning rate is scaled by the number of workers.
        ecq: Exchange gradients quantized with error feedback (ECQ-SGD) instead of in
            float32; only with two or more workers.

    Attributes:
        steps_per_epoch: Training batches per epoch of the current :meth:`fit`, set before
            :meth:`prepare` is called (``None`` before the first ``fit``), so that a learner
            can plan in steps (e.g. a pruning schedule).
        total_steps: ``steps_per_epoch * epochs`` of the current :meth:`fit`.
        train_data: The batched training ``tf.data.Dataset`` of the current :meth:`fit`, set
            before :meth:`prepare` (for learners that also train while preparing).
        train_seconds: Wall seconds of each epoch's training part (validation excluded)
            in the last :meth:`fit`.

    Example:
        >>> import numpy as np
        >>> import pocketflow_tf.learners
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> cls = get_learner_class("full-prec")
        >>> x, y = np.random.rand(32, 4).astype("float32"), np.arange(32) % 2
        >>> out = cls(training.TrainConfig(epochs=1, batch_size=8), verbose=0).fit(m, x, y)
        >>> out.output_shape
        (None, 2)
    """

    name: ClassVar[str] = "base"
    #: The learner's own constructor options (a frozen :class:`options.Options`
    #: dataclass): validated in one place, recorded by :meth:`get_config`, rebuilt by
    #: :meth:`from_config`, and turned into command-line flags and the flag reference.
    Options: ClassVar[type[options.Options]] = options.Options
    #: ``.tflite`` modes that deploy what the learner trains (``None``: the run's defaults).
    deploy_modes: ClassVar[tuple[str, ...] | None] = None
    #: Export modes the learner writes itself (:meth:`export_file`), not the converter,
    #: accepted in a run's ``export_modes`` besides the converter's (e.g. ``"pq-compact"``).
    file_modes: ClassVar[tuple[str, ...]] = ()
    #: File extension the trained model is saved with (QAT models need ``".h5"``).
    save_extension: ClassVar[str] = ".keras"
    #: Why the learner trains in one process only (``None``: it runs on several workers).
    #: Given several workers it refuses; run scripts then let the chief train alone.
    single_worker_reason: ClassVar[str | None] = None
    #: How the learner decides its own epoch count when it does not train
    #: ``train_config.epochs`` (``None``: it does); run scripts say this instead.
    epochs_note: ClassVar[str | None] = None
    #: With several workers, :meth:`prepare` runs on the chief only and the prepared model
    #: is sent to the others (for preparations that search, e.g. pruning plans).
    prepare_on_chief: ClassVar[bool] = False
    #: Factor on the fine-tuning learning rate that run scripts and benchmarks apply when
    #: this learner compresses a trained model (methods that tolerate less than plain
    #: fine-tuning set it below 1).
    finetune_lr_scale: ClassVar[float] = 1.0
    #: The method compresses a trained model and cannot start from an untrained one
    #: (applications train a baseline first when none is given).
    needs_trained_model: ClassVar[bool] = False
    #: :meth:`fit` takes a ``tf.data.Dataset`` (streamed data); ``False`` for methods that
    #: index their samples (held-out splits, calibration draws) and need arrays.
    accepts_datasets: ClassVar[bool] = True
    #: :meth:`fit` chooses on a held-out split given as ``x_val, y_val`` (with
    #: ``val_from_training`` saying whether it was carved from the training images) and only
    #: reports on ``validation_data`` (the test data); ``False``: ``validation_data`` is
    #: the held-out split its epochs are scored on.
    takes_held_out: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        # Learners that override fit() do work (planning, sampling) before super().fit():
        # the input contract must run before that, whatever the override does.
        if "fit" in cls.__dict__:
            cls.fit = checks_inputs(cls.__dict__["fit"])

    @classmethod
    def default_options(cls, out_dir: str) -> dict[str, Any]:
        """Options an application fills in from its output folder when the user gave none
        (e.g. a work folder beside the saved model); default: none.

        Example:
            >>> import pocketflow_tf.learners
            >>> get_learner_class("channel").default_options("models/x")
            {}
        """
        return {}

    @classmethod
    def deployment(cls, **learner_options: Any) -> tuple[tuple[str, ...] | None, str]:
        """``(deploy_modes, save_extension)`` for these constructor options.

        Run scripts choose export modes and the save path before the learner exists; a
        learner whose deployable form depends on an option (e.g. an int8 phase) overrides
        this.

        Example:
            >>> import pocketflow_tf.learners
            >>> get_learner_class("uniform").deployment()
            (('int8',), '.h5')
        """
        return cls.deploy_modes, cls.save_extension

    @classmethod
    def export_file(
        cls,
        mode: str,
        model: keras.Model,
        path: str | os.PathLike,
        *,
        prefix: str,
        x_verify: np.ndarray,
        y_verify: np.ndarray | None = None,
    ) -> Any:
        """Writes a verified ``.tflite`` of a mode the learner makes itself, not the converter.

        A learner listing such a mode in :attr:`file_modes` (e.g. ``"pq-compact"``: codes
        and codebooks kept in the file) overrides this; applications call it for every
        export mode that is not a :data:`pocketflow_tf.tflite_export.MODES` mode, after
        :meth:`save_artifacts` wrote the learner's files under ``prefix``.

        Args:
            mode: The export mode.
            model: The trained model (as saved).
            path: Destination ``.tflite``.
            prefix: The prefix :meth:`save_artifacts` was given.
            x_verify: Verification inputs.
            y_verify: Their labels.

        Returns:
            The :class:`pocketflow_tf.tflite_verify.ExportResult` of the written file.

        Raises:
            InvalidArgumentError: For a mode the learner does not make (the default).

        Example:
            >>> Learner.export_file("pq-compact", None, "m.tflite", prefix="m", x_verify=None)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `export_modes`: 'pq-compact'. Accepted: a converter mode for learner 'base'.
        """
        raise errors.InvalidArgumentError(
            "export_modes", mode, f"a converter mode for learner '{cls.name}'"
        )

    def __init__(
        self,
        train_config: training.TrainConfig | None = None,
        *,
        distillation: distillation.DistillationConfig | None = None,
        teacher: keras.Model | None = None,
        log_dir: str | None = None,
        checkpoint_dir: str | None = None,
        verbose: int = 2,
        backend: distributed.Backend | None = None,
        ecq: ecq.ECQConfig | None = None,
        keep_backups: bool = False,
        **option_values: Any,
    ):
        unknown = sorted(set(option_values) - set(self.Options.names()))
        if unknown:
            raise errors.InvalidArgumentError(
                unknown[0],
                option_values[unknown[0]],
                f"an option of learner '{self.name}': one of {list(self.Options.names())} "
                "or a Learner argument",
            )
        #: The validated options; each is also an attribute of the learner.
        self.options = self.Options(**option_values)
        for name in self.Options.names():
            setattr(self, name, getattr(self.options, name))
        self.train_config = train_config or training.TrainConfig(
            learning_rate=training.FINE_TUNE_LEARNING_RATE * self.finetune_lr_scale
        )
        if not isinstance(self.train_config, training.TrainConfig):
            raise errors.InvalidArgumentError(
                "train_config", type(train_config).__name__, "a pocketflow_tf.training.TrainConfig"
            )
        self.distillation = _distillation_config(distillation)
        self.teacher = teacher
        self.log_dir = log_dir
        self.checkpoint_dir = checkpoint_dir
        self.keep_backups = keep_backups
        self._backup_dirs: list[str] = []  # every backup folder fit() used (phases too)
        self._run_identity: dict[str, str] | None = None  # whose backups fit() may resume
        self.verbose = verbose
        self.backend = backend or distributed.Backend()
        self.ecq = ecq
        if self.backend.size > 1 and self.single_worker_reason:
            raise errors.InvalidArgumentError(
                "workers",
                self.backend.size,
                f"1 for learner '{self.name}' ({self.single_worker_reason})",
            )
        if ecq is not None and self.backend.size < 2:
            raise errors.InvalidArgumentError(
                "ecq", ecq, "None when training in one process (nothing is exchanged)"
            )
        self.history: keras.callbacks.History | None = None
        #: The head :meth:`fit` took off the input model (softmax) and puts back on the
        #: result; intermediate models a learner keeps (e.g. ``pruned_model``) are logits.
        self.output_head: heads.Head = heads.LOGITS
        self.train_seconds: list[float] = []
        #: What the method did (per-group counts, ratios, timings...), for run records.
        self.report: dict[str, Any] = {}
        #: The compressed model before fine-tuning, for methods that have one.
        self.pruned_model: keras.Model | None = None
        self.steps_per_epoch: int | None = None
        self.total_steps: int | None = None
        self.train_data: tf.data.Dataset | None = None

    def output_dirs(self) -> dict[str, str | None]:
        """``{argument: folder}`` of the folders :meth:`fit` writes into (``None``: unused).

        :meth:`fit` checks that each can be made before any work; a learner writing into a
        folder of its own adds it.

        Example:
            >>> Learner(log_dir="/tmp/logs").output_dirs()
            {'checkpoint_dir': None, 'log_dir': '/tmp/logs'}
        """
        return {"checkpoint_dir": self.checkpoint_dir, "log_dir": self.log_dir}

    def save_artifacts(self, prefix: str) -> dict[str, str]:
        """Writes what the learner produced besides the Keras model (e.g. compact codes).

        Args:
            prefix: Path without extension; each file gets its own suffix.

        Returns:
            ``{kind: path}`` of the files written (none by default).

        Example:
            >>> Learner().save_artifacts("/tmp/model")
            {}
        """
        return {}

    def compression_report(self) -> dict[str, Any]:
        """What the method did, as a JSON-ready dict (empty when nothing to report).

        Example:
            >>> Learner().compression_report()
            {}
        """
        report = self.report
        return report.to_dict() if hasattr(report, "to_dict") else dict(report or {})

    def deployed(self) -> Deployed | None:
        """The deployable ``.tflite`` the learner exported and verified itself during
        :meth:`fit` (``None``: the application exports the returned model).

        Example:
            >>> Learner().deployed() is None
            True
        """
        return None

    def sample_inputs(self, n: int) -> np.ndarray | None:
        """Up to ``n`` training inputs of the current :meth:`fit` (``None`` outside it).

        For preparations that calibrate on in-domain data (sensitivities, int8 ranges).

        Example:
            >>> Learner().sample_inputs(8) is None
            True
        """
        if self.train_data is None:
            return None
        xs, have = [], 0
        for batch in self.train_data:
            xb = batch[0] if isinstance(batch, tuple | list) else batch
            xs.append(np.asarray(xb, np.float32))
            have += len(xs[-1])
            if have >= n:
                break
        return np.concatenate(xs)[:n] if xs else None

    # -- the contract ------------------------------------------------------------------
    def adapt(
        self, model: keras.Model, x: np.ndarray | tf.data.Dataset, y: np.ndarray | None
    ) -> None:
        """Reads what :meth:`prepare` needs from the model and the training data, before
        any training (default: nothing), like a Keras preprocessing layer's ``adapt``.

        :meth:`fit` calls it first, with the checked inputs: a learner samples its
        calibration images here, checks its plan against the model, binds a search to the
        data -- and raises for a request it cannot serve before any work.

        Example:
            >>> import numpy as np
            >>> import pocketflow_tf.learners
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> get_learner_class("full-prec")().adapt(m, np.zeros((8, 4)), np.zeros(8)) is None
            True
        """

    def prepare(self, model: keras.Model) -> keras.Model:
        """Returns the trainable model (default: a copy of ``model``)."""
        return copy_model(model)

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks the method needs during training (default: none)."""
        return []

    def object_scope(self) -> contextlib.AbstractContextManager:
        """Scope in which the prepared model's custom layers can be rebuilt from config
        (TFMOT wrappers need theirs); used to move it into a multi-worker scope."""
        return contextlib.nullcontext()

    def finalize(self, model: keras.Model) -> keras.Model:
        """Returns the deployable model after training (default: ``model`` itself)."""
        return model

    def get_config(self) -> dict[str, Any]:
        """Serialisable settings, written into run records.

        Example:
            >>> import pocketflow_tf.learners
            >>> get_learner_class("full-prec")().get_config()["learner"]
            'full-prec'
        """
        return {
            "learner": self.name,
            "train": self.train_config.to_dict(),
            "distillation": None if self.distillation is None else vars(self.distillation),
            **self.options.to_config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], **learner_args: Any) -> Learner:
        """A learner with the settings :meth:`get_config` recorded (options, fine-tuning,
        distillation); ``learner_args`` adds what a record does not hold (``teacher``,
        ``checkpoint_dir``, ``backend``...).

        Example:
            >>> import pocketflow_tf.learners
            >>> cls = get_learner_class("channel")
            >>> lrn = cls(cp_preserve_ratio=0.4, cp_exclude=["conv1"])
            >>> again = cls.from_config(lrn.get_config())
            >>> again.get_config() == lrn.get_config(), again.cp_exclude
            (True, ('conv1',))
        """
        if config.get("learner", cls.name) not in (cls.name, *_aliases_of(cls)):
            raise errors.InvalidArgumentError(
                "config['learner']", config.get("learner"), f"'{cls.name}' for {cls.__name__}"
            )
        dst = config.get("distillation")
        return cls(
            training.TrainConfig.from_dict(config["train"]) if "train" in config else None,
            distillation=None if dst is None else distillation.DistillationConfig(**dst),
            **learner_args,
            **cls.Options.from_config(config).to_config(),
        )

    # -- training ----------------------------------------------------------------------
    @checks_inputs
    def fit(
        self,
        model: keras.Model,
        x: np.ndarray | tf.data.Dataset | None = None,
        y: np.ndarray | None = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | tf.data.Dataset | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
    ) -> keras.Model:
        """Compresses and fine-tunes ``model``; mirrors ``keras.Model.fit``.

        The data is checked by the input contract (:mod:`pocketflow_tf.inputs`) before any
        work: finite images, uint8 pixels scaled to ``[0, 1]``, labels in ``[0, classes)``
        (one-hot rows converted), shapes against the model.

        Args:
            model: A built Keras model (tf-keras, or Keras 3: bridged in memory and answered
                in Keras 3), producing logits or, through
                a final softmax, probabilities (trained on its logits either way).
            x: Training images (array) or a batched ``tf.data.Dataset`` of ``(x, y)``.
            y: Integer labels when ``x`` is an array.
            epochs: Overrides ``train_config.epochs``.
            batch_size: Overrides ``train_config.batch_size`` (arrays only).
            validation_data: ``(x_val, y_val)`` or a batched dataset.
            callbacks: Extra Keras callbacks.

        Returns:
            The finalised, deployable Keras model (the input model is not modified), with
            the input's output contract: a model ending in a softmax comes back ending in one.
        """
        if self.checkpoint_dir and self.backend.is_chief:
            # Before any work: a backup another run left here would be resumed silently.
            # (Stamped only when training starts: a refused request leaves nothing behind.)
            claim_backup(
                os.path.join(self.checkpoint_dir, "backup"), self._run_identity, stamp=False
            )
        self.adapt(model, x, y)  # the learner's own look at the data, before any work
        cfg = self.train_config
        if epochs is not None or batch_size is not None:
            cfg = cfg.replace(epochs=epochs or cfg.epochs, batch_size=batch_size or cfg.batch_size)
        backend = self.backend
        cfg = backend.scale_config(cfg)
        keras.utils.set_random_seed(cfg.seed)
        train_ds, steps = self._train_dataset(x, y, cfg)
        val_ds = self._val_dataset(validation_data, cfg)

        # Known before prepare(): learners that plan in steps (pruning schedules) read them.
        self.steps_per_epoch, self.total_steps = steps, steps * cfg.epochs
        self.train_data = train_ds
        # prepare() runs in plain eager mode, outside any strategy; what it built then moves
        # into the backend's scope and takes the chief's weights.
        student = self._prepare_on_workers(model)
        # Preparations that train (channel selection, DCP, codebook fine-tunes) diverge
        # there, not in the fine-tune below: say so, rather than a NaN loss at its batch 1.
        training.check_finite(
            student,
            learner=self.name,
            learning_rate=cfg.learning_rate,
            phase="preparing the model (its pruning or quantization step)",
        )
        with backend.scope():
            student = self._adopt(student)
            train_model = student
            if self.distillation is not None:
                if self.teacher is not None:
                    teacher = self._adopt(self.teacher)
                else:  # a frozen copy: the user's model is never modified
                    teacher = self._adopt(model, copy=True)
                helper = distillation.DistillationHelper(teacher, self.distillation)
                train_model = helper.wrap(student)
            optimizer = backend.wrap_optimizer(training.build_optimizer(cfg, steps), self.ecq)
            train_model.compile(
                optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
            )
        backend.broadcast_weights(student)
        backend.exchanged_values = sum(
            int(np.prod(v.shape)) for v in train_model.trainable_variables
        )
        self.history = train_model.fit(
            train_ds,
            epochs=cfg.epochs,
            steps_per_epoch=steps if backend.size > 1 else None,
            validation_data=val_ds,
            callbacks=self._all_callbacks(callbacks, cfg),
            verbose=self.verbose if backend.is_chief else 0,
        )
        # Every worker has finished writing its last backup before the chief removes them
        # (tf.distribute's non-chief workers save to temporary folders inside it).
        backend.barrier()
        if backend.is_chief and not self.keep_backups:
            self.release_backups()
        for copy in self._backup_copies:
            # This host's copy of the chief's backup: spent once training has resumed from
            # it (a later restart is sent the chief's again).
            shutil.rmtree(copy, ignore_errors=True)
            parent, root = os.path.dirname(copy), os.path.abspath(self.checkpoint_dir)
            while parent.startswith(root) and os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
                if parent == root:
                    break
                parent = os.path.dirname(parent)
        self._backup_copies = []
        final = self.finalize(student)
        # The last update can overflow the weights with a finite loss: never hand back (or
        # let a caller save and export) a NaN model.
        training.check_finite(
            final, learner=self.name, learning_rate=cfg.learning_rate, phase="fine-tuning"
        )
        if backend.size > 1:
            # Out of the strategy's scope again: evaluation and export then run in this
            # process alone, without waiting for the other workers.
            with self.object_scope():
                final = copy_model(final)
        return final

    def _prepare_on_workers(self, model: keras.Model) -> keras.Model:
        """:meth:`prepare` on every worker (cheap, deterministic preparations), or, when
        :attr:`prepare_on_chief` is set (searches), on the chief alone, which hands the
        prepared architecture and weights to the others in memory."""
        backend = self.backend
        if backend.size == 1 or not self.prepare_on_chief:
            return self.prepare(model)
        prepared = self.prepare(model) if backend.is_chief else None
        shared = backend.broadcast_object(
            None if prepared is None else (prepared.to_json(), prepared.get_weights())
        )
        if prepared is not None:
            return prepared
        with self.object_scope():
            rebuilt = keras.models.model_from_json(shared[0])
        rebuilt.set_weights(shared[1])
        return rebuilt

    def _adopt(self, model: keras.Model, *, copy: bool = False) -> keras.Model:
        """``model`` rebuilt inside the active ``tf.distribute`` scope (always a copy
        there); elsewhere ``model`` itself, or a copy when ``copy``."""
        if self.backend.uses_strategy_scope:
            with self.object_scope():
                return copy_model(model)
        return copy_model(model) if copy else model

    def release_backups(self) -> None:
        """Removes the per-epoch backups of :meth:`fit` once nothing can need them again.

        :meth:`fit` calls it unless ``keep_backups`` is set; a caller that kept them calls
        it after the trained model and everything made from it are written. Only the
        backup folders ``fit`` used are removed, then the folders left empty up to and
        including ``checkpoint_dir`` (an empty folder looks like an unfinished run).

        Example:
            >>> import pocketflow_tf.learners, tempfile
            >>> ckpt = os.path.join(tempfile.mkdtemp(), "m.ckpt")
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> x, y = np.random.rand(16, 4).astype("float32"), np.arange(16) % 2
            >>> lrn = get_learner_class("full-prec")(
            ...     training.TrainConfig(epochs=1, batch_size=8),
            ...     checkpoint_dir=ckpt, keep_backups=True, verbose=0)
            >>> _ = lrn.fit(m, x, y)
            >>> os.listdir(ckpt)  # kept while the caller saves and exports
            ['backup']
            >>> lrn.release_backups()
            >>> os.path.exists(ckpt)
            False
        """
        if not self.checkpoint_dir:
            return
        root = os.path.abspath(self.checkpoint_dir)
        for folder in dict.fromkeys(self._backup_dirs):  # each once, in order
            shutil.rmtree(folder, ignore_errors=True)
            parent = os.path.dirname(os.path.abspath(folder))
            # Phase sub-folders (e.g. <ckpt>/cluster/backup) go too when left empty.
            while parent.startswith(root) and os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
                if parent == root:
                    break
                parent = os.path.dirname(parent)
        self._backup_dirs = []
        if os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)

    def _all_callbacks(self, extra, cfg: training.TrainConfig):
        self.train_seconds = []
        self._backup_copies: list[str] = []
        # First: a NaN batch raises before any other callback (a backup) sees its weights.
        cbs = [training.DivergenceGuard(self.name, cfg.learning_rate)]
        cbs.append(_EpochTimer(self.train_seconds))
        cbs += self.backend.callbacks() + list(self.callbacks()) + list(extra or [])
        if self.checkpoint_dir:
            # BackupAndRestore saves at each epoch end and restores on a restart, which makes
            # long runs resumable after a kill. The backup outlives training (see
            # release_backups): it is what lets a kill after training cost no epoch.
            backup = os.path.join(self.checkpoint_dir, "backup")
            if self.backend.is_chief:
                claim_backup(backup, self._run_identity)
            self._backup_dirs.append(backup)
            if share_chief_backup(self.backend, backup):
                self._backup_copies.append(os.path.join(backup, "chief"))
            cbs.append(self.backend.backup_callback(backup))
        if self.log_dir and self.backend.is_chief:
            cbs.append(keras.callbacks.TensorBoard(self.log_dir, profile_batch=0))
        return cbs

    def _train_dataset(self, x, y, cfg):
        if isinstance(x, tf.data.Dataset):
            if y is not None:
                raise errors.InvalidArgumentError(
                    "y", "an array", "None when x is a tf.data.Dataset (it yields (x, y))"
                )
            steps = int(x.cardinality())
            if self.backend.size > 1 and shards.is_presharded(x):
                # Already this worker's part (shards.Shard): as many steps on every worker.
                return self.backend.presharded_dataset(x), max(1, steps)
            if self.backend.size > 1:
                ds = self.backend.distribute_dataset(x)
                return ds, max(1, self.backend.worker_steps(steps))
            return x, steps if steps > 0 else 1000
        if x is None or y is None:
            raise errors.InvalidArgumentError(
                "x",
                None if x is None else "arrays without y",
                "arrays x and y, or a tf.data.Dataset",
            )
        return self.backend.train_dataset(np.asarray(x), np.asarray(y), cfg)

    def _val_dataset(self, validation_data, cfg):
        if validation_data is None:
            return None
        if isinstance(validation_data, tf.data.Dataset):
            ds = validation_data
        else:
            xv, yv = validation_data
            ds = training.make_dataset(np.asarray(xv), np.asarray(yv), max(cfg.batch_size, 256))
        if self.backend.uses_strategy_scope:
            ds = self.backend.distribute_dataset(ds)
        return ds


def _distillation_config(value: Any) -> distillation.DistillationConfig | None:
    """``Learner(distillation=...)`` as a config: ``True`` the defaults, ``False`` none.

    Example:
        >>> _distillation_config(True)
        DistillationConfig(weight=4.0, temperature=2.0)
        >>> _distillation_config("kd")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `distillation`: 'kd'. Accepted: a pocketflow_tf.distillation.DistillationConfig, True (distil with the default settings) or None/False (no distillation).
    """
    if value is None or value is False:
        return None
    if value is True:
        return distillation.DistillationConfig()
    if not isinstance(value, distillation.DistillationConfig):
        raise errors.InvalidArgumentError(
            "distillation",
            value,
            "a pocketflow_tf.distillation.DistillationConfig, True (distil with the default "
            "settings) or None/False (no distillation)",
        )
    return value


#: The file in a backup folder that says which run the backup belongs to.
RUN_STAMP = "run.json"


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.shape}{part.dtype}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def run_identity(lrn: Learner, model: keras.Model, x: Any, y: Any) -> dict[str, str]:
    """What a run's backups belong to: sha256 of its model, its data and its options.

    The number of epochs is left out: a rerun with more epochs continues the same run.
    A ``tf.data.Dataset`` is known by its element spec and cardinality only (reading it
    to hash would cost an epoch).

    Example:
        >>> import pocketflow_tf.learners
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> lrn = get_learner_class("full-prec")()
        >>> sorted(run_identity(lrn, m, np.zeros((4, 2), "float32"), np.zeros(4)))
        ['data', 'model', 'options']
    """
    if isinstance(x, tf.data.Dataset):
        data = _digest(x.element_spec, int(x.cardinality()))
    else:
        data = _digest(np.asarray(x), np.asarray(y))
    options = {**lrn.get_config(), "train": lrn.train_config.replace(epochs=1).to_dict()}
    return {
        "model": _digest(model.to_json(), *model.get_weights()),
        "data": data,
        "options": _digest(json.dumps(options, sort_keys=True, default=repr)),
    }


def claim_backup(folder: str, identity: dict[str, str] | None, *, stamp: bool = True) -> None:
    """Stamps ``folder`` (a per-epoch backup) as ``identity``'s (only checks when not
    ``stamp``), or refuses a backup that belongs to another run.

    A backup is resumed by the path alone (Keras's ``BackupAndRestore``): a run left
    unfinished in an output folder would otherwise be continued by a rerun with another
    model or other data, which skips its epochs and hands back the old run's weights.

    Raises:
        InvalidArgumentError: ``folder`` holds a backup whose stamp differs or is missing.

    Example:
        >>> import tempfile
        >>> folder = os.path.join(tempfile.mkdtemp(), "backup")
        >>> claim_backup(folder, {"model": "a", "data": "b", "options": "c"})
        >>> sorted(os.listdir(folder))
        ['run.json']
    """
    if identity is None:
        return
    backup = [e for e in os.listdir(folder) if e != RUN_STAMP] if os.path.isdir(folder) else []
    if not backup:
        if stamp:
            atomic_io.write_json(os.path.join(folder, RUN_STAMP), identity)
        return
    try:
        with open(os.path.join(folder, RUN_STAMP)) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        stamp = {}
    differs = [key for key in identity if stamp.get(key) != identity[key]]
    if differs:
        said = ", ".join(differs) if stamp else "its run cannot be told (no readable stamp)"
        raise errors.InvalidArgumentError(
            "checkpoint_dir",
            os.path.dirname(folder),
            "a folder without a backup, or holding the backup of this same run to resume "
            f"it: it holds the backup of another run (different {said}); resuming it would "
            "skip epochs and hand back that run's weights. Remove it, or choose another "
            "output folder (--out)",
        )


def share_chief_backup(backend: distributed.Backend, backup: str) -> bool:
    """Gives every worker the chief's per-epoch backup before training (re)starts.

    Keras's ``BackupAndRestore`` restores each worker from ``<backup>/chief``, the
    chief's folder. On hosts that do not share that folder, a worker would find no backup
    (or a stale one) and start at another epoch than the chief, and the collectives would
    never meet. So the chief sends its backup's files (in memory, one broadcast: a resumed
    run's only cost), and a worker whose copy differs replaces it; where the folder is
    shared the copies are equal and nothing is written.

    Returns:
        Whether this worker wrote a copy (its host does not share the chief's folder).

    Example:
        >>> import tempfile
        >>> share_chief_backup(distributed.Backend(), tempfile.mkdtemp())  # one worker: no-op
        False
    """
    if backend.size < 2:
        return False
    folder = os.path.join(backup, "chief")
    files = None
    if backend.is_chief:
        files = {}
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        files[name] = f.read()
    files = backend.broadcast_object(files)
    if backend.is_chief:
        return False
    mine = {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    mine[name] = f.read()
    if mine == files:
        return False  # a shared folder, or an up-to-date copy
    # A stale copy of this host (an older run's) must not be restored: replace it whole.
    for name in mine:
        os.remove(os.path.join(folder, name))
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        atomic_io.write_bytes(os.path.join(folder, name), data)
    return True


@dataclasses.dataclass(frozen=True)
class Deployed:
    """A ``.tflite`` a learner exported and verified itself (see :meth:`Learner.deployed`).

    Attributes:
        mode: Its export mode (``"float"``, ``"int8"``...).
        path: The file.
        artifacts: Other files to record, ``{kind: path}`` (e.g. reports).
        metrics: Figures to record (e.g. ``target_met``, a measured speed-up).

    Example:
        >>> Deployed("int8", "m.tflite").artifacts
        {}
    """

    mode: str
    path: str
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


class _EpochTimer(keras.callbacks.Callback):
    """Appends each epoch's training wall time (up to validation) to ``seconds``."""

    def __init__(self, seconds: list[float]):
        super().__init__()
        self.seconds = seconds
        self._start: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def _stop(self):
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()
