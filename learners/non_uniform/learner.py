"""``NonUniformQuantLearner`` (``--learner non-uniform``): learned codebooks by weight clustering.

Deep-Compression-style non-uniform quantization through TFMOT: every chosen weight tensor is
clustered to ``2 ** nuql_weight_bits`` shared values (its codebook), initialised from the
trained weights (k-means++ by default) and learned by fine-tuning -- each centroid moves
with the summed gradient of its weights, and weights re-join their nearest centroid as they
train (TFMOT's ``ClusterWeights``). Steps:

1. :meth:`~NonUniformQuantLearner.prepare` plans (:mod:`.plan`: which layers are clustered,
   which stay float and why), dry-runs the int8 wrap when ``nuql_int8`` is set
   (:mod:`.cqat`), then wraps the chosen layers one by one -- all before training;
2. the base class fine-tunes, optionally distilled from the input model;
3. :meth:`~NonUniformQuantLearner.finalize` strips the wrappers (``strip_clustering``): a
   plain Keras model whose clustered kernels hold <= ``2 ** bits`` distinct values;
4. with ``nuql_int8``, a second fine-tune runs cluster-preserving QAT (CQAT) on the stripped
   model and the result is an int8 QAT model; its full-integer ``.tflite`` keeps <= ``2 **
   bits`` distinct int8 values per output channel of a convolution and per Dense kernel.

``report`` (:class:`.report.NonUniformReport`) gives per clustered kernel the distinct values
in Keras and in the converted files (read back from the bytes), the codebook storage against
float32, the float fallbacks, and raw/gzip ``.tflite`` sizes.

Deployment: without ``nuql_int8`` the result is a plain float model (``.keras``; any export
mode keeps the codebooks, per output channel once BatchNorm is folded); with it, the result
is a QAT model whose deployable form is the ``"int8"`` export, saved as ``.h5`` (TFMOT's QAT
models do not round-trip ``.keras``, see :mod:`pocketflow_tf.qat`) -- see
:meth:`NonUniformQuantLearner.deployment`.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import training
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(8, 3),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> x, y = np.random.rand(32, 4, 4, 1).astype("float32"), np.arange(32) % 2
    >>> lrn = NonUniformQuantLearner(training.TrainConfig(epochs=1, batch_size=8),
    ...                              nuql_weight_bits=2, nuql_quantize_all_layers=True,
    ...                              nuql_report_tflite=False, verbose=0)
    >>> out = lrn.fit(m, x, y)
    >>> [np.unique(l.kernel.numpy()).size <= 4 for l in (out.layers[0], out.layers[2])]
    [True, True]
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar

import tensorflow_model_optimization as tfmot

from pocketflow_tf import errors, learner, tflite_export, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.non_uniform import cqat, options, tflite_values
from pocketflow_tf.learners.non_uniform import plan as plan_lib
from pocketflow_tf.learners.non_uniform import report as report_lib
from pocketflow_tf.learners.non_uniform import storage as storage_lib
from pocketflow_tf.learners.product_quant import compact_export

#: Default CQAT epochs after the clustering fine-tune (re-exported from :mod:`.options`).
DEFAULT_INT8_EPOCHS = options.DEFAULT_INT8_EPOCHS
#: Calibration samples for the int8 conversion measured by the report.
_CALIBRATION_SAMPLES = 256


@learner.register("non-uniform", "non-uniform-quant", "NonUniformQuantLearner")
class NonUniformQuantLearner(learner.Learner):
    """Weight clustering (learned codebooks) of a trained model through TFMOT.

    Args:
        train_config: Fine-tuning settings (see :class:`~pocketflow_tf.learner.Learner`);
            clustering starts from trained weights, so a tenth of the from-scratch learning
            rate is typical.
        nuql_weight_bits: Index bits per clustered weight, 1..8: ``2 ** bits`` clusters per
            weight tensor (default 4: 16 clusters, PocketFlow's default).
        nuql_init_style: Centroid initialisation: ``"kmeans_plus_plus"`` (default; TFMOT's
            seeded k-means++), ``"linear"`` (evenly spaced between min and max, Deep
            Compression's choice), ``"density"`` (at evenly spaced quantiles) or
            ``"random"``; PocketFlow's ``"quantile"`` and ``"uniform"`` are aliases of
            ``"density"`` and ``"linear"``.
        nuql_quantize_all_layers: Also cluster the first and last clusterable layers
            (default ``False``, PocketFlow's: the stem conv and the logits layer stay
            float -- both small, both sensitive).
        nuql_int8: After the clustering fine-tune, run cluster-preserving int8 QAT and
            return the QAT model (deploy with the ``"int8"`` export, save as ``.h5``).
        nuql_int8_epochs: Epochs of that CQAT fine-tune (default 1).
        nuql_report_tflite: Convert the result in :meth:`finalize` to measure the
            ``.tflite`` sizes and the distinct values in the files for :attr:`report`
            (a float conversion of the result and of the input model; an int8 one with
            ``nuql_int8``). Turn off to save the conversion time.
        **kwargs: The base :class:`~pocketflow_tf.learner.Learner` arguments
            (distillation, teacher, log_dir, checkpoint_dir, verbose).

    Attributes:
        deploy_modes: The ``.tflite`` modes that deploy what this learner returns: ``None``
            (any mode: the result is a float model) or ``("int8",)`` with ``nuql_int8``.
            The class attribute describes the default options; see :meth:`deployment`.
        save_extension: ``".keras"``, or ``".h5"`` with ``nuql_int8`` (a QAT model).
        plan: The :class:`~.plan.ClusterPlan` of the last :meth:`prepare`.
        report: The :class:`~.report.NonUniformReport` of the last run.
        clustered_model: The stripped clustered float model of the last run (with
            ``nuql_int8``, the model CQAT started from).
        cluster_history: With ``nuql_int8``, the Keras history of the clustering phase
            (``history`` is then the CQAT phase's).

    Raises:
        InvalidArgumentError: On any bad option, from the constructor.

    Example:
        >>> NonUniformQuantLearner(nuql_weight_bits=0)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `nuql_weight_bits`: 0. Accepted: an integer in 1..8 (2**bits clusters per layer, 2 to 256).
    """

    name = "non-uniform"
    # Clustered training at the usual fine-tune LR (0.02, SGD) collapsed ResNet-20 within an
    # epoch (measured 2026-11-30: 41 % with and 18 % without weight decay, against 95.3 %
    # at 0.002 on 2000 test images), so clustering fine-tunes at a tenth of it.
    finetune_lr_scale: ClassVar[float] = 0.1
    single_worker_reason: ClassVar[str | None] = (
        "TFMOT's clustering wrappers are not yet verified under tf.distribute or Horovod"
    )

    Options = options.NonUniformOptions
    #: ``--export_modes ...,cluster-compact``: the clustered kernels as indices + centroids
    #: in the ``.tflite`` (:func:`~pocketflow_tf.learners.product_quant.compact_export.export_clustered`).
    file_modes: ClassVar[tuple[str, ...]] = (compact_export.CLUSTER_MODE,)

    @classmethod
    def export_file(
        cls,
        mode: str,
        model: keras.Model,
        path: str | os.PathLike,
        *,
        prefix: str,
        x_verify,
        y_verify=None,
    ):
        """Writes the verified ``"cluster-compact"`` ``.tflite`` of the clustered model.

        Its clustered kernels are stored as indices (several per byte when few clusters)
        and centroids, rebuilt in the graph; smaller than the float and int8 files, slower.

        Example:
            >>> NonUniformQuantLearner.export_file("cluster-compact", model, "m.tflite",
            ...                                    prefix="m", x_verify=x)  # doctest: +SKIP
        """
        if mode != compact_export.CLUSTER_MODE:
            return super().export_file(
                mode, model, path, prefix=prefix, x_verify=x_verify, y_verify=y_verify
            )
        return compact_export.export_clustered(model, path, x_verify=x_verify, y_verify=y_verify)

    def __init__(self, train_config: training.TrainConfig | None = None, **kwargs: Any):
        super().__init__(train_config, **kwargs)
        # Instance values shadow the class defaults: the deployable form depends on nuql_int8.
        self.deploy_modes, self.save_extension = self.deployment(nuql_int8=self.nuql_int8)
        self.plan: plan_lib.ClusterPlan | None = None
        self.report: report_lib.NonUniformReport | None = None
        self.clustered_model: keras.Model | None = None
        self.cluster_history: keras.callbacks.History | None = None
        self._phase = "cluster"
        self._input_model: keras.Model | None = None

    @classmethod
    def deployment(
        cls, *, nuql_int8: bool = False, **other_options: Any
    ) -> tuple[tuple[str, ...] | None, str]:
        """``(deploy_modes, save_extension)`` for the given learner options.

        For run scripts that must choose export modes and the save path before the learner
        exists (pass the learner's keyword options; the others are ignored).

        Example:
            >>> NonUniformQuantLearner.deployment(nuql_int8=True, nuql_weight_bits=3)
            (('int8',), '.h5')
            >>> NonUniformQuantLearner.deployment()
            (None, '.keras')
        """
        if options.NonUniformOptions(nuql_int8=nuql_int8).nuql_int8:
            return ("int8",), ".h5"
        return cls.deploy_modes, cls.save_extension

    # -- the Learner contract ----------------------------------------------------------
    def make_plan(self, model: keras.Model) -> plan_lib.ClusterPlan:
        """Which layers of ``model`` this learner clusters; trains nothing.

        Raises:
            InvalidArgumentError: If no layer would be clustered.

        Example:
            >>> m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16, name="a"),
            ...                       keras.layers.Dense(16, name="b"),
            ...                       keras.layers.Dense(2, name="c")])
            >>> [l.name for l in NonUniformQuantLearner().make_plan(m).clustered]
            ['b']
        """
        return plan_lib.make_plan(
            model,
            bits=self.nuql_weight_bits,
            init_style=self.nuql_init_style,
            quantize_all_layers=self.nuql_quantize_all_layers,
        )

    def fit(self, model: keras.Model, x=None, y=None, **kwargs: Any) -> keras.Model:
        """Clusters and fine-tunes ``model`` (then CQAT with ``nuql_int8``).

        Mirrors :meth:`pocketflow_tf.learner.Learner.fit`; ``epochs`` applies to the
        clustering fine-tune, ``nuql_int8_epochs`` to the CQAT one. With a
        ``checkpoint_dir``, each phase keeps its backups in its own sub-folder (a restart
        during CQAT re-runs the seeded clustering phase, then resumes CQAT).

        Example:
            >>> NonUniformQuantLearner().fit(model, x_train, y_train)  # doctest: +SKIP
        """
        self.plan, self.report, self.clustered_model, self.cluster_history = (None,) * 4
        self._input_model = model
        ckpt = self.checkpoint_dir
        try:
            self._phase = "cluster"
            if ckpt and self.nuql_int8:
                self.checkpoint_dir = os.path.join(ckpt, "cluster")
            clustered = super().fit(model, x, y, **kwargs)
            if not self.nuql_int8:
                return clustered
            self.cluster_history = self.history
            self._phase = "cqat"
            if ckpt:
                self.checkpoint_dir = os.path.join(ckpt, "cqat")
            teacher = self.teacher
            if self.distillation is not None and teacher is None:
                # The teacher is the uncompressed input, not the clustered model that CQAT
                # starts from (the base class would default to a copy of the latter).
                self.teacher = learner.copy_model(model)
            try:
                with cqat.quiet_missing_gradients():
                    return super().fit(
                        clustered, x, y, **{**kwargs, "epochs": self.nuql_int8_epochs}
                    )
            finally:
                self.teacher = teacher
        finally:
            self._phase = "cluster"
            self._input_model = None
            self.checkpoint_dir = ckpt
            if ckpt and os.path.isdir(ckpt) and not os.listdir(ckpt):
                os.rmdir(ckpt)

    def prepare(self, model: keras.Model) -> keras.Model:
        """Plans and wraps the chosen layers of a copy of ``model`` for clustering.

        Everything that can refuse the model runs here, before training: the plan (no
        clusterable layer is an error) and, with ``nuql_int8``, a dry run of the CQAT wrap.
        In the CQAT phase of :meth:`fit` it returns the CQAT model instead.

        Example:
            >>> m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16),
            ...                       keras.layers.Dense(2)])
            >>> lrn = NonUniformQuantLearner(nuql_quantize_all_layers=True)
            >>> [type(l).__name__ for l in lrn.prepare(m).layers]
            ['ClusterWeights', 'ClusterWeights']
        """
        if self._phase == "cqat":
            return cqat.cluster_preserving_qat_model(model)
        plan = self.make_plan(model)
        if self.nuql_int8:
            cqat.check_int8_quantizable(model)
        self.plan = plan
        return plan_lib.wrap_for_clustering(model, plan)

    def finalize(self, model: keras.Model) -> keras.Model:
        """Strips the clustering wrappers and writes :attr:`report`.

        In the CQAT phase of :meth:`fit`, returns the trained QAT model in TFMOT's default
        QAT form (same outputs and int8 export, but it saves and loads as ``.h5``; see
        :func:`.cqat.to_default_qat`) and adds the int8 figures to the report.

        Example:
            >>> NonUniformQuantLearner().finalize(wrapped)  # doctest: +SKIP
        """
        if self.plan is None:
            raise errors.InvalidArgumentError(
                "model",
                getattr(model, "name", model),
                "a model wrapped by this learner's prepare()",
            )
        if self._phase == "cqat":
            return self._finalize_int8(model)
        stripped = tfmot.clustering.keras.strip_clustering(model)
        self.clustered_model = stripped
        kernels = tflite_values.keras_kernel_values(stripped, self.plan)
        over = [f"{k.name}: {k.distinct}" for k in kernels if not k.within_limit]
        if over:  # TFMOT guarantees the bound; a breach means a wrapper did not apply
            warnings.warn(
                f"non-uniform: kernels with more than {self.plan.clusters} distinct values "
                f"after stripping: {'; '.join(over)}",
                stacklevel=2,
            )
        self.report = report_lib.NonUniformReport(
            self.plan, storage_lib.storage_report(self.plan), kernels
        )
        if self.nuql_report_tflite:
            self.report.tflite_float = self._file_report(stripped, "float", self._input_model)
        return stripped

    def _finalize_int8(self, model: keras.Model) -> keras.Model:
        sample = self.sample_inputs(32)
        deploy = cqat.to_default_qat(model, self.clustered_model, check_inputs=sample)
        if self.report is not None:
            self.report.qat_kernels = tflite_values.keras_kernel_values(deploy, self.plan)
            if self.nuql_report_tflite and sample is not None:
                self.report.tflite_int8 = self._file_report(deploy, "int8")
        return deploy

    # -- measuring -----------------------------------------------------------------------
    def inspect_tflite(
        self, model_content: bytes | str | os.PathLike, model: keras.Model | None = None
    ) -> list[tflite_values.KernelValues]:
        """Distinct values per clustered kernel as stored in an exported ``.tflite``.

        Args:
            model_content: Flatbuffer bytes or a ``.tflite`` path.
            model: The Keras model it was converted from (default: the clustered float
                model of the last run; pass the QAT model for an int8 file, though the
                pairing also works from the float one).

        Example:
            >>> lrn.inspect_tflite("out/model.int8.tflite")[0].max_per_channel  # doctest: +SKIP
            16
        """
        if self.plan is None or (model is None and self.clustered_model is None):
            raise errors.InvalidArgumentError(
                "learner", "not fitted", "a learner whose fit() has run (it holds the plan)"
            )
        return tflite_values.tflite_kernel_values(
            model if model is not None else self.clustered_model, model_content, self.plan
        )

    def _file_report(
        self, model: keras.Model, mode: str, baseline: keras.Model | None = None
    ) -> report_lib.FileReport | None:
        calib = self.sample_inputs(_CALIBRATION_SAMPLES) if mode == "int8" else None
        content = tflite_export.convert(model, mode, representative_data=calib)
        raw, gz = tflite_export.tflite_size(content)
        kernels = tflite_values.tflite_kernel_values(model, content, self.plan)
        base_raw = base_gz = None
        if baseline is not None:
            base_raw, base_gz = tflite_export.tflite_size(tflite_export.convert(baseline, mode))
        return report_lib.FileReport(mode, raw, gz, kernels, base_raw, base_gz)

    def get_config(self) -> dict[str, Any]:
        """Settings (and, after a run, the plan) for run records.

        Example:
            >>> config = NonUniformQuantLearner(nuql_init_style="quantile").get_config()
            >>> {k: v for k, v in config.items() if k.startswith("nuql_")}
            ... # doctest: +NORMALIZE_WHITESPACE
            {'nuql_weight_bits': 4, 'nuql_init_style': 'density', 'nuql_quantize_all_layers': False,
             'nuql_int8': False, 'nuql_int8_epochs': 1, 'nuql_report_tflite': True}
        """
        config = super().get_config()
        if self.plan is not None:
            config["plan"] = self.plan.to_dict()
        return config


__all__ = ["DEFAULT_INT8_EPOCHS", "NonUniformQuantLearner"]
