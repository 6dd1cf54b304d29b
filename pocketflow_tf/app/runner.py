"""The job behind every ``nets/<model>_at_<dataset>_run.py`` script, as a plain function.

:func:`run` takes a typed :class:`RunOptions` (the run scripts fill it from absl flags in
:mod:`pocketflow_tf.app.cli`; nothing here reads flags) and does, in order:

1. load the recipe's data set (Debian's Fashion-MNIST or ``data_dir``);
2. build the recipe's model, or load ``model_path`` (Keras ``safe_mode`` unless trusted);
3. train it with the chosen learner (resumable: per-epoch backups beside ``save_path``,
   kept until step 7 is done, so a kill during the save or the export costs no epoch),
   optionally distilled from a teacher;
4. evaluate it on the test split and count its parameters and FLOPs;
5. export every requested ``.tflite`` (float, dynamic-range, float16, int8), each verified
   against the Keras model on real test samples before it is kept;
6. measure LiteRT latency (one thread, medians) and the interleaved ratio of each export
   against the float one;
7. write a JSON run record and a Markdown report beside the model, and print a summary.

Example:
    >>> from pocketflow_tf.app import runner
    >>> opts = runner.RunOptions("convnet_at_fmnist", nb_epochs_rat=0.07, nb_train_samples=512)
    >>> summary = runner.run(opts)  # doctest: +SKIP
    >>> summary["metrics"]["test_acc"] > 0.5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import os
import sys
import time
from typing import Any

import numpy as np

from pocketflow_tf import (
    accounting,
    arm64,
    cli_errors,
    datasets,
    distillation,
    distributed,
    ecq,
    errors,
    inputs,
    int4_export,
    latency,
    learner,
    model_io,
    qat,
    records,
    sparsity,
    tflite_export,
    tflite_verify,
    training,
)
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import recipe as recipe_lib

EXEC_MODES = ("train", "eval")
#: Appended to an export mode (``float-sparse``, ``int8-sparse``...) to store pruned kernels
#: in TFLite's sparse format (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``).
SPARSE_SUFFIX = "-sparse"


#: Exports made when the user names none (a quantization learner replaces them by its own).
DEFAULT_EXPORT_MODES = ("float", "int8")
#: Export modes another module writes (not the TFLite converter), with the mode whose
#: verification thresholds they are checked at: ``int4`` is
#: :mod:`pocketflow_tf.int4_export` (int4 kernels where a layer has <= 4 bits, int8 else).
OWN_EXPORTS = {"int4": "int8"}
#: Every export mode a run accepts (each but the own ones optionally ``-sparse``).
EXPORT_MODES = (*tflite_export.MODES, *OWN_EXPORTS)


def check_export_mode(mode: str, own: tuple[str, ...] = ()) -> str:
    """Returns ``mode`` if a run can export it, else raises naming what is accepted.

    ``own`` adds a learner's :attr:`~pocketflow_tf.learner.Learner.file_modes` (files it
    writes itself, e.g. ``pq-compact``; never ``-sparse``).

    Example:
        >>> check_export_mode("int4"), check_export_mode("int8-sparse")
        ('int4', 'int8-sparse')
        >>> check_export_mode("int4-sparse")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `export_modes`: 'int4-sparse'. Accepted: a comma-separated subset of ('float', 'dynamic', 'float16', 'int8', 'int4'), each of ('float', 'dynamic', 'float16', 'int8') optionally with '-sparse' (sparse storage of pruned weights).
    """
    base, sparse = split_export_mode(mode)
    if mode in own:
        return mode
    if base not in EXPORT_MODES or (sparse and base in OWN_EXPORTS):
        raise errors.InvalidArgumentError(
            "export_modes",
            mode,
            f"a comma-separated subset of {(*EXPORT_MODES, *own)}, each of "
            f"{tflite_export.MODES} optionally with '{SPARSE_SUFFIX}' (sparse storage of "
            "pruned weights)",
        )
    return mode


#: Model file endings a training run can save to (what model_io.save_model writes).
SAVE_SUFFIXES = (".keras", ".h5", ".hdf5")


def split_export_mode(mode: str) -> tuple[str, bool]:
    """``"int8-sparse"`` -> ``("int8", True)``; ``"float"`` -> ``("float", False)``.

    Example:
        >>> split_export_mode("float-sparse")
        ('float', True)
    """
    if mode.endswith(SPARSE_SUFFIX):
        return mode[: -len(SPARSE_SUFFIX)], True
    return mode, False


@dataclasses.dataclass
class RunOptions:
    """Everything one run does; the run scripts' flags map one-to-one onto these fields.

    Attributes:
        recipe: ``<model>_at_<dataset>`` (see :data:`pocketflow_tf.nets.recipe.RECIPES`).
        learner: Learner name or PocketFlow alias (``full-prec``, ...).
        exec_mode: ``"train"`` (train, evaluate, export) or ``"eval"`` (evaluate
            ``model_path`` or ``save_path`` and report its costs).
        nb_epochs_rat: Share of the recipe's full epoch count to train (1.0 = full recipe).
        data_dir: Data folder (default: Debian's Fashion-MNIST path; required for CIFAR-10).
        save_path: Where the trained ``.keras`` model goes (default
            ``models/<recipe>/<learner>/model.keras``; ``.h5`` for quantization-aware
            learners); exports, record and report go beside it.
        log_dir: TensorBoard folder (default ``logs/<recipe>/<learner>``).
        model_path: Start from this trained model instead of a freshly built one.
        trust_model: Allow loading models that contain Python code (Lambda layers).
        teacher_path: Teacher for distillation (default: the model at ``model_path``).
        enbl_dst: Distil from the teacher while training.
        loss_w_dst: Weight of the distillation loss.
        tempr_dst: Distillation temperature.
        export_modes: ``.tflite`` variants to export and verify (empty: no export). Left at
            the default, a quantization learner exports its own deployable modes.
        num_verify: Test samples each export is verified on (>= 200).
        strict_export: A quantized export that fails verification aborts the run. By
            default it is refused (nothing written), reported loudly and in the record
            (``tflite_<mode>_refused``), and the run goes on; a failed float export is
            always fatal, since it means the converter itself is wrong.
        build_options: Extra keyword arguments of the recipe's model builder
            (e.g. ``{"depth": 32}``).
        learner_options: Extra keyword arguments of the learner's constructor.
        seed: Seed of initialisation, shuffling and augmentation.
        batch_size: Overrides the recipe's batch size.
        learning_rate: Overrides the recipe's peak learning rate.
        nb_train_samples: Train on the first N training samples only (smoke runs).
        latency_runs: Timed invocations per latency measurement.
        verbose: Keras verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        ecq_bits: With two or more workers, exchange gradients quantized to this many
            bits with error feedback (ECQ-SGD: 2, 4 or 8; 0 = float32 all-reduce).
        ecq_bucket_size: Gradient values sharing one scale in ECQ-SGD.
        baseline_path: ``--learner auto`` without ``model_path``: the trained model it
            compresses, reused when a finished run left it there, else trained first with
            ``full-prec`` (same recipe and ``nb_epochs_rat``). Default
            ``models/<recipe>/full-prec/model.keras``, where a ``full-prec`` run saves.

    Example:
        >>> RunOptions("resnet_at_fmnist", exec_mode="serve")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `exec_mode`: 'serve'. Accepted: one of ('train', 'eval').
    """

    recipe: str
    learner: str = "full-prec"
    exec_mode: str = "train"
    nb_epochs_rat: float = 0.05
    data_dir: str | None = None
    save_path: str | None = None
    log_dir: str | None = None
    model_path: str | None = None
    trust_model: bool = False
    teacher_path: str | None = None
    enbl_dst: bool = False
    loss_w_dst: float = 4.0
    tempr_dst: float = 2.0
    export_modes: tuple[str, ...] = DEFAULT_EXPORT_MODES
    num_verify: int = 1000
    strict_export: bool = False
    verify_arm64: bool = False
    build_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    learner_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    batch_size: int | None = None
    learning_rate: float | None = None
    nb_train_samples: int | None = None
    latency_runs: int = 200
    verbose: int = 2
    ecq_bits: int = 0
    ecq_bucket_size: int = 512
    baseline_path: str | None = None

    def __post_init__(self):
        # Every check runs here, before any data is read or any file is written.
        import pocketflow_tf.learners  # noqa: F401  (registers every learner by name)

        recipe_lib.get_recipe(self.recipe)
        cls = learner.get_learner_class(self.learner)
        if self.exec_mode not in EXEC_MODES:
            raise errors.InvalidArgumentError("exec_mode", self.exec_mode, f"one of {EXEC_MODES}")
        self.export_modes = tuple(m for m in self.export_modes if m)
        # A quantization learner trains for one deployable form (a QAT model's "float"
        # export would be fake-quantised float, matching neither the Keras model nor int8);
        # Learner.file_modes are files the learner writes itself (pq-compact).
        deploy, ext = cls.deployment(**self.learner_options)
        own = cls.file_modes
        for mode in self.export_modes:
            check_export_mode(mode, own)
        if deploy and self.exec_mode == "train":
            if self.export_modes == DEFAULT_EXPORT_MODES:
                self.export_modes = tuple(deploy)
            elif any(split_export_mode(m)[0] not in deploy for m in self.export_modes):
                raise errors.InvalidArgumentError(
                    "export_modes",
                    ",".join(self.export_modes),
                    f"modes among {deploy} for learner '{cls.name}'",
                )
        if self.num_verify < 200:
            raise errors.InvalidArgumentError("num_verify", self.num_verify, "an integer >= 200")
        if self.verify_arm64:
            arm64.Arm64Lane.find()  # a missing lane is refused now, not after the training
        if self.nb_train_samples is not None and self.nb_train_samples < 1:
            raise errors.InvalidArgumentError(
                "nb_train_samples", self.nb_train_samples, "an integer >= 1"
            )
        if self.exec_mode == "eval" and not (self.model_path or self.save_path):
            raise errors.InvalidArgumentError(
                "model_path", None, "the model to evaluate (or --save_path of a finished run)"
            )
        if self.baseline_path is None:
            self.baseline_path = self._default_baseline()
        if not cls.needs_trained_model and self.baseline_path != self._default_baseline():
            raise errors.InvalidArgumentError(
                "baseline_path",
                self.baseline_path,
                "unset unless the learner compresses a trained model it may train first "
                "(--learner auto)",
            )
        for name, path in (("model_path", self.model_path), ("teacher_path", self.teacher_path)):
            if path and not os.path.exists(path):
                raise errors.InvalidArgumentError(name, path, "an existing model file or folder")
        if self.enbl_dst and not (self.teacher_path or self.model_path):
            raise errors.InvalidArgumentError(
                "enbl_dst",
                True,
                "distillation with a trained teacher: pass --teacher_path, or --model_path "
                "(the trained model being compressed is then the teacher)",
            )
        # The distillation settings validate themselves (weight >= 0, temperature > 0).
        distillation.DistillationConfig(self.loss_w_dst, self.tempr_dst)
        self.ecq_config()  # likewise the gradient codec
        if self.save_path is None:
            self.save_path = os.path.join("models", self.recipe, self.learner, "model" + ext)
        elif self.exec_mode == "train" and not self.save_path.lower().endswith(ext):
            if ext != ".keras":  # TFMOT's QAT models only round-trip through .h5
                raise errors.InvalidArgumentError(
                    "save_path", self.save_path, f"a path ending in {ext} for learner '{cls.name}'"
                )
        if self.log_dir is None:
            self.log_dir = os.path.join("logs", self.recipe, self.learner)
        if self.exec_mode == "train":
            # Work folders and the like that the learner places beside the saved model.
            out_dir = os.path.dirname(self.save_path)
            self.learner_options = {**cls.default_options(out_dir), **self.learner_options}
        self._check_output_paths(cls)

    def _check_output_paths(self, cls: type[learner.Learner]) -> None:
        # Here, before any data is read: a path that cannot be written would otherwise fail
        # at the first epoch's backup or, worse, at the save after all the training.
        if self.exec_mode == "train":
            cli_errors.check_output_path("save_path", self.save_path, suffixes=SAVE_SUFFIXES)
        else:  # eval writes its record and report beside save_path
            folder = os.path.dirname(os.path.abspath(self.save_path))
            try:
                cli_errors.check_output_path("save_path", folder, is_dir=True)
            except errors.InvalidArgumentError as e:
                raise errors.InvalidArgumentError("save_path", self.save_path, e.accepted) from None
        cli_errors.check_output_path("log_dir", self.log_dir, is_dir=True)
        if self.exec_mode != "train":
            return
        for field in dataclasses.fields(cls.Options):
            kind = field.metadata.get("path")
            value = self.learner_options.get(field.name)
            if kind and value:
                if kind == "dir":
                    cli_errors.check_output_path(field.name, value, is_dir=True)
                else:
                    cli_errors.check_output_path(field.name, value)
        if cls.needs_trained_model:
            if not self.model_path and not os.path.exists(self.baseline_path):
                cli_errors.check_output_path(
                    "baseline_path", self.baseline_path, suffixes=SAVE_SUFFIXES
                )

    def _default_baseline(self) -> str:
        return os.path.join("models", self.recipe, "full-prec", "model.keras")

    def ecq_config(self) -> ecq.ECQConfig | None:
        """The ECQ-SGD codec these options ask for (``None``: float32 exchange).

        Example:
            >>> RunOptions("convnet_at_fmnist", ecq_bits=4).ecq_config().bits
            4
        """
        if self.ecq_bits == 0:
            return None
        return ecq.ECQConfig(bits=self.ecq_bits, bucket_size=self.ecq_bucket_size)

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (written into the run record).

        Example:
            >>> RunOptions("convnet_at_fmnist").to_dict()["learner"]
            'full-prec'
        """
        return dataclasses.asdict(self)


def _say(msg: str) -> None:
    print(f"[pocketflow-tf] {msg}", flush=True)


def run(
    opts: RunOptions,
    *,
    command: list[str] | None = None,
    backend: distributed.Backend | None = None,
) -> dict[str, Any]:
    """Runs one job (see the module docstring) and returns its record as a dict.

    Args:
        opts: What to run.
        command: The command line, written into the record so the run can be reproduced.
        backend: The workers training together (default: this process alone). Every
            worker trains; the chief alone evaluates, saves, exports and writes the
            record, which it then hands to the others in memory.

    Returns:
        The run record (``metrics``, ``artifacts``, ``config``, ``versions``...), the same
        on every worker.

    Example:
        >>> rec = run(RunOptions("convnet_at_fmnist", nb_train_samples=512))  # doctest: +SKIP
    """
    backend = backend or distributed.Backend()
    if backend.size > 1 and opts.exec_mode != "train":
        raise errors.InvalidArgumentError(
            "workers",
            backend.size,
            f"1 with --exec_mode {opts.exec_mode} (only training is shared)",
        )
    reason = learner.get_learner_class(opts.learner).single_worker_reason
    alone = backend.size > 1 and reason
    if opts.ecq_bits and (backend.size < 2 or alone):
        raise errors.InvalidArgumentError(
            "ecq_bits",
            opts.ecq_bits,
            "0 in a single-worker run (start two workers, run_local.sh -n 2, with a learner "
            "that trains on several)",
        )
    if alone:
        # The documented fallback: the chief runs the whole job in its own process.
        if backend.is_chief:
            _say(
                f"learner '{opts.learner}' trains in one process ({reason}): the chief "
                f"runs it alone, the other {backend.size - 1} worker(s) wait for its record"
            )
            return backend.broadcast_object(_run(opts, command, distributed.Backend()))
        return backend.broadcast_object(None)
    if backend.is_chief:
        return backend.broadcast_object(_run(opts, command, backend))
    # The other workers train, then wait for the chief's record; their progress lines
    # would only repeat the chief's.
    with contextlib.redirect_stdout(io.StringIO()):
        _train(opts, recipe_lib.get_recipe(opts.recipe), _load_data(opts), None, backend)
    return backend.broadcast_object(None)


def _load_data(opts: RunOptions):
    rec_cfg = recipe_lib.get_recipe(opts.recipe)
    _say(f"loading data set '{rec_cfg.dataset}'")
    data = datasets.load_dataset(rec_cfg.dataset, opts.data_dir)
    if opts.nb_train_samples:
        data = data.subset(n_train=opts.nb_train_samples)
    _say(f"  train {len(data.y_train)}, test {len(data.y_test)}, input {data.input_shape}")
    return data


def _baseline_for_auto(opts: RunOptions, command, backend: distributed.Backend) -> str:
    """The trained model ``--learner auto`` compresses: reused, or trained now."""
    path = opts.baseline_path
    record = os.path.splitext(path)[0] + ".train.record.json"
    if os.path.exists(path) and os.path.exists(record):  # the record ends a finished run
        _say(f"compressing the trained baseline {path} (delete it to train a new one)")
        return path
    _say(
        f"no trained baseline at {path}: training one first with learner 'full-prec' "
        f"(nb_epochs_rat={opts.nb_epochs_rat}), then compressing it"
    )
    base = RunOptions(
        opts.recipe,
        learner="full-prec",
        nb_epochs_rat=opts.nb_epochs_rat,
        data_dir=opts.data_dir,
        save_path=path,
        log_dir=os.path.join(opts.log_dir, "baseline"),  # beside the run's own logs
        export_modes=("float",),
        num_verify=opts.num_verify,
        build_options=opts.build_options,
        seed=opts.seed,
        batch_size=opts.batch_size,
        learning_rate=opts.learning_rate,
        nb_train_samples=opts.nb_train_samples,
        latency_runs=opts.latency_runs,
        verbose=opts.verbose,
    )
    _run(base, command, backend)
    return path


def _run(opts: RunOptions, command, backend: distributed.Backend) -> dict[str, Any]:
    if learner.get_learner_class(opts.learner).needs_trained_model and not opts.model_path:
        if opts.exec_mode == "train":
            baseline = _baseline_for_auto(opts, command, backend)
            opts = dataclasses.replace(opts, model_path=baseline)
    rec_cfg = recipe_lib.get_recipe(opts.recipe)
    record = records.RunRecord(f"{opts.exec_mode}:{opts.learner}", opts.to_dict(), command=command)
    out_dir = os.path.dirname(os.path.abspath(opts.save_path))
    stem = os.path.splitext(os.path.basename(opts.save_path))[0]

    data = _load_data(opts)
    if backend.size > 1:
        record.add_section("distributed", backend.describe())

    came_as_keras3, lrn = False, None
    if opts.exec_mode == "eval":
        loaded = model_io.load_model_with_info(
            opts.model_path or opts.save_path, trust_unsafe=opts.trust_model
        )
        model, came_as_keras3 = loaded.model, loaded.saved_by_keras3
        # A model of another class count would be scored without a word (e.g. 0.1).
        inputs.model_classes(model, num_classes=data.num_classes)
        record.add_metrics(source_model=loaded.path)
    else:
        model, came_as_keras3, lrn = _train(opts, rec_cfg, data, record, backend)
        if backend.size > 1:  # now with the bytes the gradient exchange sent
            record.add_section("distributed", backend.describe())

    record_evaluation(model, data.x_test, data.y_test, record, "the test split")

    if opts.exec_mode == "train":
        # No Keras 3 copy of a QAT model: TFMOT's wrappers exist only in Keras 2.
        keras3_copy = came_as_keras3 and not qat.is_quantized(model)
        # A learner that exports and verifies its own deployable file (auto) says which
        # file and which model format (a QAT result must be saved as .h5).
        deployed = lrn.deployed()
        save_path = opts.save_path
        if deployed:
            save_path = os.path.splitext(save_path)[0] + lrn.save_extension
        saved = model_io.save_model(model, save_path, keras3_copy=keras3_copy)
        for kind, path in saved.items():
            record.add_artifact(f"model_{kind}", path)
        opts = deploy_and_time(opts, deployed, model, data, out_dir, stem, record)
    return conclude(opts, record, out_dir, stem, lrn)


def record_evaluation(model, x, y, record, split: str, **metrics: Any) -> float:
    """Records the model's accuracy on ``x, y`` (``test_acc``, then ``metrics``) and its
    profile (parameters, FLOPs, MACs and the per-layer section); returns the accuracy.

    Example:
        >>> record_evaluation(model, data.x_test, data.y_test, record,
        ...                   "the test split")  # doctest: +SKIP
        0.9213
    """
    _say(f"evaluating on {split}")
    acc = training.evaluate_accuracy(model, x, y)
    profile = accounting.profile_model(model)
    record.add_metrics(
        test_acc=acc,
        **metrics,
        params=profile.total_params,
        flops=profile.total_flops,
        macs=profile.total_macs,
    )
    record.add_section("profile", profile.to_dict())
    return acc


def conclude(opts, record, out_dir: str, stem: str, lrn) -> dict[str, Any]:
    """Finishes and writes the record (``<stem>.<exec_mode>.record.json`` and ``.report.md``),
    releases the learner's backups, prints the summary and returns the record as a dict.

    Example:
        >>> result = conclude(opts, record, "models/m", "model", lrn)  # doctest: +SKIP
    """
    record.finish("ok")
    json_path = record.save(os.path.join(out_dir, f"{stem}.{opts.exec_mode}.record.json"))
    md_path = record.save_markdown(os.path.join(out_dir, f"{stem}.{opts.exec_mode}.report.md"))
    if lrn is not None:
        # Only now, with the model, exports and record written, are the per-epoch backups
        # spent: a kill before this line reruns without training again (see _train).
        lrn.release_backups()
    result = record.to_dict()
    print_summary(opts, result, json_path, md_path)
    return result


def _train(
    opts: RunOptions, rec_cfg: recipe_lib.Recipe, data, record, backend: distributed.Backend
) -> tuple[Any, bool, learner.Learner]:
    # `record` is None on the workers other than the chief: they train and write nothing.
    # Compressing a trained model is fine-tuning (see Recipe.finetune_config), unless the
    # user set the learning rate.
    fine_tune = bool(opts.model_path) and opts.learning_rate is None
    make_config = rec_cfg.finetune_config if fine_tune else rec_cfg.train_config
    cfg = make_config(opts.nb_epochs_rat, seed=opts.seed)
    changes = {
        k: v
        for k, v in {"batch_size": opts.batch_size, "learning_rate": opts.learning_rate}.items()
        if v is not None
    }
    cfg = cfg.replace(**changes) if changes else cfg

    cls = learner.get_learner_class(opts.learner)
    if fine_tune:
        scale = cls.finetune_lr_scale
        cfg = cfg.replace(learning_rate=cfg.learning_rate * scale)
        extra = f" x {scale:g} for learner '{cls.name}'" if scale != 1 else ""
        _say(
            f"fine-tuning a trained model: peak learning rate {cfg.learning_rate:g} (a tenth "
            f"of the recipe's{extra}), no warm-up; --lrn_rate_init overrides"
        )
    came_as_keras3 = False
    if opts.model_path:
        _say(f"loading model {opts.model_path}")
        loaded = model_io.load_model_with_info(opts.model_path, trust_unsafe=opts.trust_model)
        model, came_as_keras3 = loaded.model, loaded.saved_by_keras3
        if tuple(model.input_shape[1:]) != tuple(data.input_shape):
            raise errors.InvalidArgumentError(
                "model_path",
                opts.model_path,
                f"a model taking {data.input_shape} inputs (it takes {model.input_shape[1:]})",
            )
        inputs.model_classes(model, num_classes=data.num_classes)  # before any training
    else:
        # Seeded first: RunOptions.seed promises the same initial weights in every process.
        keras.utils.set_random_seed(opts.seed)
        model = rec_cfg.build(data.input_shape, data.num_classes, **opts.build_options)

    teacher = None
    dst = None
    if opts.enbl_dst:
        dst = distillation.DistillationConfig(opts.loss_w_dst, opts.tempr_dst)
        if opts.teacher_path:
            teacher = model_io.load_model(opts.teacher_path, trust_unsafe=opts.trust_model)

    lrn = cls(
        cfg,
        distillation=dst,
        teacher=teacher,
        log_dir=opts.log_dir,
        checkpoint_dir=opts.save_path + ".ckpt",
        # Kept until _run has written every output: a rerun after a kill during the save or
        # the export finds all epochs done and trains none.
        keep_backups=True,
        verbose=opts.verbose,
        backend=backend,
        ecq=opts.ecq_config(),
        **opts.learner_options,
    )
    if record is None:
        lrn.fit(model, data.x_train, data.y_train, validation_data=(data.x_test, data.y_test))
        return None, came_as_keras3, lrn
    record.add_section("learner", lrn.get_config())
    workers = (
        f" on {backend.size} workers ({backend.name}, global batch {cfg.batch_size * backend.size}, "
        f"learning rate x{backend.size})"
        if backend.size > 1
        else ""
    )
    epochs = (
        f"for {cfg.epochs} epoch(s){workers} (nb_epochs_rat={opts.nb_epochs_rat}; 1.0 is the "
        f"full recipe of {rec_cfg.train.epochs} epochs)"
        if cls.epochs_note is None
        else f"({cls.epochs_note}){workers}"
    )
    _say(
        f"training {model.name} with learner '{cls.name}' {epochs}; TensorBoard logs in "
        f"{opts.log_dir}"
    )
    start = time.time()
    trained = lrn.fit(model, data.x_train, data.y_train, validation_data=(data.x_test, data.y_test))
    record.add_metrics(train_wall_s=round(time.time() - start, 1))
    if cls.epochs_note is None:  # else the learner chose its epochs (epochs_run says how many)
        record.add_metrics(epochs=cfg.epochs)
    if lrn.history is not None:
        # Fewer than `epochs` when the backups of a killed run already held the others.
        record.add_metrics(epochs_run=len(lrn.history.epoch))
    if lrn.train_seconds:
        samples = lrn.total_steps * cfg.batch_size * backend.size
        record.add_metrics(train_samples_per_s=round(samples / sum(lrn.train_seconds), 1))
    record.add_section("learner", lrn.get_config())  # again: now with what fit() decided
    report = lrn.compression_report()
    if report:  # what a compression learner did: per-group counts, FLOPs ratio, timings
        record.add_section("compression", report)
    for kind, path in lrn.save_artifacts(os.path.splitext(opts.save_path)[0]).items():
        record.add_artifact(kind, path)
    pruned = lrn.pruned_model
    if pruned is not None:
        acc = training.evaluate_accuracy(pruned, data.x_test, data.y_test)
        record.add_metrics(test_acc_before_finetune=round(acc, 4))
        _say(f"accuracy after pruning, before fine-tuning: {acc:.4f}")
    if lrn.history is not None:
        record.add_section(
            "history", {k: [float(v) for v in vs] for k, vs in lrn.history.history.items()}
        )
    return trained, came_as_keras3, lrn


def export_all(opts, model, data, out_dir, stem, record) -> dict[str, str]:
    """Exports ``model`` in every mode of ``opts.export_modes``, each verified on the test
    split; a quantized export failing its check is refused (nothing written) and recorded,
    unless ``opts.strict_export``; returns ``{mode: path}`` of the files written.

    Example:
        >>> export_all(opts, model, data, "models/m", "model", record)  # doctest: +SKIP
        {'float': 'models/m/model.float.tflite', 'int8': 'models/m/model.int8.tflite'}
    """
    n = min(opts.num_verify, len(data.y_test))
    x_verify, y_verify = data.x_test[:n], data.y_test[:n]
    # Calibration samples come from the training split, fed exactly as the Keras model sees
    # them (the models carry their own normalisation), never from the verification samples.
    rng = np.random.default_rng(opts.seed)
    rep = data.x_train[rng.choice(len(data.x_train), min(512, len(data.x_train)), replace=False)]
    exports = {}
    for mode in opts.export_modes:
        path = os.path.join(out_dir, f"{stem}.{mode}.tflite")
        _say(f"exporting {mode} .tflite and verifying it on {n} test samples")
        base, sparse = split_export_mode(mode)
        try:
            content, checked_as = None, base
            if base == "int4":
                content, checked_as = _int4_content(model, rep, mode, record), OWN_EXPORTS[base]
            if base not in EXPORT_MODES:  # a file the learner makes (pq-compact)
                res = learner.get_learner_class(opts.learner).export_file(
                    mode,
                    model,
                    path,
                    prefix=os.path.join(out_dir, stem),
                    x_verify=x_verify,
                    y_verify=y_verify,
                )
            else:
                res = tflite_verify.export_tflite(
                    model,
                    path,
                    mode=checked_as,
                    x_verify=x_verify,
                    y_verify=y_verify,
                    representative_data=rep if base == "int8" else None,
                    sparse=sparse,
                    content=content,
                )
        except errors.VerificationError as e:
            # A quantized export of a model that is not yet trained enough (or not suited to
            # quantization) can fail its check while the float export and the trained model
            # are fine; losing the whole run for it helps nobody. Nothing was written.
            if opts.strict_export or base == "float":
                raise
            _say(f"  {mode}: REFUSED, nothing written: {e}")
            record.add_metrics(**{f"tflite_{mode}_refused": str(e)})
            continue
        if sparse:
            # The weight sparsity read back from the file, kernel by kernel.
            report = sparsity.sparsity_report(model, res.path)
            record.add_metrics(**{f"tflite_{mode}_sparsity": report.tflite_sparsity})
            record.add_section(f"sparsity_{mode}", report.to_dict())
        rep_d = res.report.to_dict()
        _say(
            f"  {mode}: {res.bytes} bytes ({res.bytes_gzip} gzip), top-1 agreement "
            f"{rep_d['top1_agreement']:.4f}, max |diff| {rep_d['max_abs_diff']:.2e}, "
            f"acc delta {rep_d['acc_delta']:+.4f}"
        )
        record.add_artifact(f"tflite_{mode}", res.path)
        record.add_metrics(
            **{
                f"tflite_{mode}_bytes": res.bytes,
                f"tflite_{mode}_bytes_gzip": res.bytes_gzip,
                f"tflite_{mode}_acc": rep_d["acc_tflite"],
                f"tflite_{mode}_agreement": rep_d["top1_agreement"],
            }
        )
        record.add_section(f"verify_{mode}", rep_d)
        if getattr(opts, "verify_arm64", False):
            _verify_on_arm64(mode, res.path, x_verify, record)
        exports[mode] = res.path
    return exports


def _int4_content(model, rep, mode: str, record) -> bytes:
    """The int4 file of ``model`` (its own allocation when quantization-aware, every
    kernel at 4 bits else); records each layer's storage and says which layers fell back
    to int8 and why."""
    out = int4_export.convert(model, int4_export.default_bits(model), rep)
    n4 = sum(s.stored == "INT4" for s in out.layers)
    _say(f"  {mode}: {n4} of {len(out.layers)} kernels stored as int4, levels checked in the file")
    for s in out.fallbacks:
        _say(f"  {mode}: layer {s.layer!r} ({s.bits} bits) stays int8: {s.fallback}")
    record.add_section(f"storage_{mode}", out.to_dict())
    record.add_metrics(
        **{
            f"tflite_{mode}_int4_layers": n4,
            f"tflite_{mode}_fallbacks": [s.layer for s in out.fallbacks],
        }
    )
    return out.content


#: Verification samples run on the aarch64 LiteRT by ``--verify_arm64``: 200 is what a check
#: needs (one flip: 0.5 %), and emulation is slow (ResNet-20 under qemu, 200 images: about
#: 5 min float, 20-45 s int8; docs/arm64.md).
ARM64_SAMPLES = 200


def _verify_on_arm64(mode: str, path: str, x_verify, record) -> None:
    # The written file, on the emulated phone CPU against x86 LiteRT; the figures go to the
    # record, the full report beside the file (<path>.arm64.json). A missing lane raises.
    rep = arm64.verify_arm64(path, x_verify[:ARM64_SAMPLES])
    steps = "" if rep.max_steps is None else f" = {rep.max_steps:g} steps"
    _say(
        f"  {mode} on ARM64 ({rep.runtime['arm64']}, qemu {rep.lane['cpu']}): top-1 agreement "
        f"with x86 {rep.top1_agreement:.4f}, max |diff| {rep.max_abs_diff:.2e}{steps}"
    )
    record.add_artifact(f"tflite_{mode}_arm64", path + arm64.RECORD_SUFFIX)
    record.add_metrics(
        **{
            f"tflite_{mode}_arm64_agreement": rep.top1_agreement,
            f"tflite_{mode}_arm64_max_abs_diff": rep.max_abs_diff,
            f"tflite_{mode}_arm64_max_steps": rep.max_steps,
        }
    )
    record.add_section(f"arm64_{mode}", rep.to_dict())


def record_deployed(deployed: learner.Deployed, data, record) -> dict[str, str]:
    """Records the ``.tflite`` a learner exported and verified itself (auto), evaluated on
    the test split here like any export, and its reports; returns ``{mode: path}``.

    Example:
        >>> record_deployed(lrn.deployed(), data, record)  # doctest: +SKIP
        {'int8': 'models/resnet_at_fmnist/auto/auto/final/model.int8.tflite'}
    """
    mode, path = deployed.mode, deployed.path
    _say(f"the learner exported and verified {path}; evaluating it on the test split")
    acc = tflite_verify.tflite_accuracy(path, data.x_test, data.y_test, batch_size=100)
    with open(path, "rb") as f:
        raw = f.read()
    record.add_artifact(f"tflite_{mode}", path)
    record.add_metrics(
        **{
            f"tflite_{mode}_bytes": len(raw),
            f"tflite_{mode}_bytes_gzip": len(gzip.compress(raw)),
            f"tflite_{mode}_acc": acc,
        }
    )
    if deployed.metrics:  # e.g. whether a target was met, a speed-up the learner measured
        record.add_metrics(**deployed.metrics)
    for kind, artifact in deployed.artifacts.items():
        record.add_artifact(kind, artifact)
    return {mode: path}


def deploy_and_time(opts, deployed: learner.Deployed | None, model, data, out_dir, stem, record):
    """Records the file the learner deployed itself, else exports ``model`` in every mode
    (:func:`export_all`), then times what was written (:func:`measure_latency`).

    Returns:
        ``opts``, with ``export_modes`` set to the learner's own file's mode when it deployed
        one (what the summary lists).

    Example:
        >>> opts = deploy_and_time(opts, lrn.deployed(), model, data, "models/m", "model",
        ...                        record)  # doctest: +SKIP
    """
    if deployed is not None:
        exports = record_deployed(deployed, data, record)
        opts = dataclasses.replace(opts, export_modes=tuple(exports))
    else:
        exports = export_all(opts, model, data, out_dir, stem, record)
    if exports:
        measure_latency(opts, exports, record)
    return opts


def measure_latency(opts, exports: dict[str, str], record) -> None:
    """Records each export's LiteRT latency (1 thread, median of ``opts.latency_runs``) and
    each one's interleaved speed-up over the float export.

    Example:
        >>> measure_latency(opts, {"float": "m.float.tflite"}, record)  # doctest: +SKIP
    """
    _say("measuring LiteRT latency (1 thread, batch 1, medians)")
    for mode, path in exports.items():
        stats = latency.measure_latency(path, runs=opts.latency_runs)
        record.add_metrics(**{f"latency_{mode}_ms": stats.median_ms})
    ref = exports.get("float")
    for mode, path in exports.items():
        if ref is None or mode == "float" or f"speedup_{mode}_vs_float" in record.metrics:
            continue
        ratio = latency.interleaved_ratio(path, ref, rounds=max(5, opts.latency_runs // 10))
        record.add_metrics(**{f"speedup_{mode}_vs_float": ratio.speedup})


def target_missed(result: dict[str, Any]) -> bool:
    """True when a run with a target (``--learner auto``) finished without meeting it.

    Args:
        result: The run record returned by :func:`run`.

    Example:
        >>> target_missed({"metrics": {"target_met": False}})
        True
        >>> target_missed({"metrics": {"test_acc": 0.9}})  # no target: nothing to miss
        False
    """
    return result.get("metrics", {}).get("target_met") is False


def print_summary(opts, result: dict, json_path: str, md_path: str) -> None:
    """Prints the end-of-run summary (target verdict, accuracy, costs, files).

    Example:
        >>> print_summary(opts, record.to_dict(), "r.json", "r.md")  # doctest: +SKIP
    """
    m = result["metrics"]
    lines = [
        "",
        f"== {opts.recipe} / {opts.learner} ({opts.exec_mode}) ==",
    ]
    if "target_met" in m:
        # Printed whatever --verbose says: with verbose 0 it is the only place a user learns
        # that the run ended without reaching what was asked.
        answer = result.get("sections", {}).get("compression", {}).get("answer", {})
        verdict = "met" if m["target_met"] else "NOT MET"
        lines.append(f"target           {verdict}: {answer.get('summary', '')}".rstrip(": "))
    lines += [
        f"test accuracy    {m['test_acc']:.4f}",
        f"parameters       {m['params']:,}",
        f"FLOPs / image    {m['flops']:,} ({m['macs']:,} MACs)",
    ]
    for mode in opts.export_modes if opts.exec_mode == "train" else ():
        if f"tflite_{mode}_refused" in m:
            lines.append(f".tflite {mode:<8} REFUSED: {m[f'tflite_{mode}_refused']}")
            continue
        line = (
            f".tflite {mode:<8} {m[f'tflite_{mode}_bytes']:,} bytes "
            f"({m[f'tflite_{mode}_bytes_gzip']:,} gzip), acc {m[f'tflite_{mode}_acc']:.4f}, "
            f"{m[f'latency_{mode}_ms']:.3f} ms/image"
        )
        if f"speedup_{mode}_vs_float" in m:
            line += f", {m[f'speedup_{mode}_vs_float']:.2f}x vs float (interleaved)"
        lines.append(line)
    for name, art in result["artifacts"].items():
        lines.append(f"{name:<16} {art['path']}")
    lines += [f"record           {json_path}", f"report           {md_path}", ""]
    print("\n".join(lines), file=sys.stdout, flush=True)
