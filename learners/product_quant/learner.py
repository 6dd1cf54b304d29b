"""``ProductQuantLearner`` (``--learner product-quant``): "And the Bit Goes Down".

Product quantization of Conv2D and Dense kernels as in Stock et al. (ICLR 2020):

1. plan (before any training, so that bad options fail fast): which layers are quantized,
   their block size ``d`` and codebook size ``k`` (or the largest uniform ``k`` meeting
   ``pq_target_ratio``), and the exact compressed size (:mod:`.plan`);
2. layer by layer, bottom-up: sample the layer's inputs on training images from the network
   quantized so far and from the uncompressed one (:mod:`.sampling`); refit the kernel so that
   the student's inputs reproduce the teacher's outputs (``pq_correct_drift``); learn ``k``
   codewords by activation-weighted EM (exhaustive E-step, least-squares M-step, empty
   clusters split; :mod:`.pq`); then fine-tune this layer's codewords alone
   (``pq_nb_iters_layer`` steps, assignments fixed, gradients averaged over each codeword's
   sub-vectors; :mod:`.layers`) by distillation from the uncompressed model;
3. global fine-tuning of every codeword (and of the parameters that stay float: biases,
   BatchNorm scales and offsets, float layers) with the base learner's ``fit``, distilled
   from the uncompressed model by default;
4. finalize: round codebooks to their storage dtype, decode into a plain Keras model of the
   original architecture, re-estimate BatchNorm statistics on training batches
   (:mod:`.batchnorm`).

The returned model is that plain model (kernels ``codebook[codes]``), so the framework's
float / float16 / int8 TFLite exports and their verification apply unchanged; the compact
form -- packed codes, codebooks, float rest -- is written by :meth:`save_compressed`
(:mod:`.storage`). The framework's ``.tflite`` exports hold dense kernels (TFLite has no PQ
kernel), so the compressed size is the one in :attr:`ProductQuantLearner.report`, also the
``.npz``'s payload; :mod:`.compact_export` writes a ``.tflite`` holding the codes and
codebooks instead, rebuilding the kernels in the graph (smaller, slower).

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import training
    >>> from pocketflow_tf.compat import keras, tf
    >>> inp = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inp)
    >>> x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(x))
    >>> x_tr = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    >>> lrn = ProductQuantLearner(training.TrainConfig(epochs=1, batch_size=32), verbose=0,
    ...                           pq_codebook_size=8, pq_block_size_1x1=4, pq_nb_samples=32,
    ...                           pq_nb_iters_layer=2, pq_bn_batches=1)
    >>> out = lrn.fit(m, x_tr, np.arange(64) % 2)
    >>> len(np.unique(out.get_layer("c1").get_weights()[0].reshape(9, 16).T, axis=0)) <= 8
    True
    >>> lrn.report["quantized_layers"], lrn.report["ratio"] > 2
    (['c1', 'fc'], True)
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, ClassVar

import numpy as np

from pocketflow_tf import batchnorm, distillation, errors, learner, model_io, options, training
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.product_quant import (
    compact_export,
    layers,
    plan,
    pq,
    sampling,
    storage,
)

_NOT_GIVEN = object()


@dataclasses.dataclass(frozen=True)
class ProductQuantOptions(options.Options):
    """The ``pq_*`` options of :class:`ProductQuantLearner` (see its arguments).

    Example:
        >>> ProductQuantOptions(pq_codebook_size=64).pq_codebook_size
        64
        >>> ProductQuantOptions(pq_target_ratio=1)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `pq_target_ratio`: 1. Accepted: None or a number > 1 (float / compressed bytes).
    """

    pq_codebook_size: int = options.option(
        256,
        help="codewords per layer (with pq_target_ratio: the largest tried)",
        low=plan.MIN_CODEBOOK,
        high=plan.MAX_CODEBOOK,
        accepted=plan.CODEBOOK_ACCEPTED,
    )
    pq_block_size_conv: int | None = options.option(
        None, help="sub-vector size of k x k convolutions (default k*k)", low=1
    )
    pq_block_size_1x1: int = options.option(
        4, help="sub-vector size of 1x1 convolutions and Dense layers", low=1
    )
    pq_target_ratio: float | None = options.option(
        None,
        help="pick the largest codebook size whose compression ratio reaches this",
        low=1,
        low_open=True,
        accepted="None or a number > 1 (float / compressed bytes)",
    )
    pq_exclude: tuple[str, ...] = options.option((), help="layers kept in float32")
    pq_codebook_dtype: str = options.option(
        "float16", choices=tuple(plan.CODEBOOK_DTYPES), help="storage type of the codebooks"
    )
    pq_nb_samples: int = options.option(
        1000, help="training images sampled for each layer's input statistics", low=1
    )
    pq_nb_points: int = options.option(
        8, help="output positions sampled per image and layer", low=1
    )
    pq_nb_iters_em: int = options.option(30, help="EM iterations per layer", low=1)
    pq_nb_iters_layer: int = options.option(
        50, help="codeword fine-tune steps per layer (0: none)", low=0
    )
    pq_correct_drift: bool = options.option(
        True,
        help="target the uncompressed network's outputs (refit to the quantized-so-far "
        "inputs before clustering)",
    )
    pq_bn_batches: int = options.option(
        50, help="training batches of the final BatchNorm re-estimation (0: none)", low=0
    )

    def check(self) -> None:
        plan.check_codebook_size("pq_codebook_size", self.pq_codebook_size)  # a power of two


@learner.register("product-quant", "pq", "ProductQuantLearner")
class ProductQuantLearner(learner.Learner):
    """Product quantization with activation-weighted codebooks, then distilled fine-tuning.

    Args:
        train_config: Global fine-tuning settings (see :class:`learner.Learner`); the
            per-layer codeword fine-tuning uses the same optimiser and learning rate, held
            constant, without weight decay.
        pq_codebook_size: Codewords per layer ``k``, a power of two in 2..65536 (codes of 1 to
            16 bits); the paper uses 256. With ``pq_target_ratio``, the largest ``k`` tried.
        pq_block_size_conv: Sub-vector length ``d`` for convolutions larger than 1x1; ``None``:
            ``kh * kw`` (one input channel's spatial kernel, the paper's ``d = 9`` for 3x3).
            Must divide ``kh * kw * c_in`` of every such quantized layer.
        pq_block_size_1x1: ``d`` for 1x1 convolutions and Dense layers (paper: 4 or 8); must
            divide their input channels.
        pq_target_ratio: When given (> 1), the largest uniform ``k <= pq_codebook_size`` whose
            whole-model compression ratio reaches it; a target no ``k`` reaches is refused
            before training.
        pq_exclude: Layer names kept float32 (e.g. the first convolution).
        pq_codebook_dtype: ``"float16"`` (default, as in the paper) or ``"float32"``
            codebook storage; the decoded model uses the rounded codewords.
        pq_nb_samples: Training images sampled for each layer's input statistics.
        pq_nb_points: Output positions sampled per image and layer.
        pq_nb_iters_em: Maximum EM iterations per layer.
        pq_nb_iters_layer: Codeword fine-tuning steps after each layer (0: none).
        pq_correct_drift: Target the uncompressed network's outputs (refit the kernel to the
            quantized-so-far inputs before clustering) rather than the outputs of the original
            kernel on those inputs.
        pq_bn_batches: Training batches for the final BatchNorm re-estimation (0: none).
        **kwargs: Passed to :class:`learner.Learner`. ``distillation`` defaults to
            :class:`~pocketflow_tf.distillation.DistillationConfig` ``()`` (on), since
            distillation from the uncompressed model is part of the method; pass
            ``distillation=None`` for plain cross-entropy in the global stage.

    Attributes:
        layer_plan: The :class:`.plan.Plan` of the last :meth:`fit`.
        codes: ``{layer: storage.LayerCode}`` of the final model.
        compressed_model: The decoded model returned by the last :meth:`fit`.
        report: Per-layer figures (``d``, ``k``, sizes, output errors, seconds) and totals
            (``compressed_bytes``, ``float_bytes``, ``ratio``, BatchNorm re-estimation).

    Example:
        >>> ProductQuantLearner(pq_codebook_size=100)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `pq_codebook_size`: 100. Accepted: a power of two in 2..65536 (codes of 1 to 16 bits).
    """

    name = "product-quant"
    single_worker_reason: ClassVar[str | None] = (
        "its codebook learning and codeword fine-tuning run their own training loops, not yet shared between workers"
    )

    Options = ProductQuantOptions
    #: The decoded model's float and int8 files, and the compact one (codes + codebooks in
    #: the file, :mod:`.compact_export`) written from the saved ``.pq.npz``.
    deploy_modes: ClassVar[tuple[str, ...]] = ("float", "int8", compact_export.MODE)
    file_modes: ClassVar[tuple[str, ...]] = (compact_export.MODE,)

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
    ):
        """Writes the verified compact ``.tflite`` (``"pq-compact"``) from ``<prefix>.pq.npz``.

        The codes file :meth:`save_artifacts` wrote is read back and checked against
        ``model`` (:func:`.compact_export.export_from_codes_file`): a corrupt codes file is
        refused, naming what is wrong.

        Example:
            >>> ProductQuantLearner.export_file("pq-compact", model, "out/m.pq-compact.tflite",
            ...                                 prefix="out/m", x_verify=x)  # doctest: +SKIP
        """
        if mode != compact_export.MODE:
            return super().export_file(
                mode, model, path, prefix=prefix, x_verify=x_verify, y_verify=y_verify
            )
        return compact_export.export_from_codes_file(
            model, prefix + ".pq.npz", path, x_verify=x_verify, y_verify=y_verify
        )

    def __init__(self, train_config: training.TrainConfig | None = None, **kwargs: Any):
        if kwargs.get("distillation", _NOT_GIVEN) is _NOT_GIVEN:
            kwargs["distillation"] = distillation.DistillationConfig()
        super().__init__(train_config, **kwargs)
        self.layer_plan: plan.Plan | None = None
        self.codes: dict[str, storage.LayerCode] = {}
        self.compressed_model: keras.Model | None = None
        self.report: dict[str, Any] = {}
        self._calib: np.ndarray | None = None
        self._source: keras.Model | None = None
        self._layer_log: dict[str, dict[str, Any]] = {}
        self._t0 = 0.0

    # -- entry points ----------------------------------------------------------------
    def make_plan(self, model: keras.Model) -> plan.Plan:
        """The layer plan for ``model`` under this learner's options (raises on bad ones).

        Example:
            >>> inp = keras.Input((4, 4, 8))
            >>> m = keras.Model(inp, keras.layers.Conv2D(8, 1, name="c")(inp))
            >>> ProductQuantLearner(pq_codebook_size=4, pq_block_size_1x1=3).make_plan(m)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `pq_block_size_1x1`: 3. Accepted: a divisor of 8, the input rows of layer 'c' (kernel (1, 1, 8, 8)); or add 'c' to pq_exclude to keep it float32.
        """
        model_io.require_graph(model, "product quantization")
        kw = dict(
            block_conv=self.pq_block_size_conv,
            block_1x1=self.pq_block_size_1x1,
            exclude=self.pq_exclude,
            codebook_dtype=self.pq_codebook_dtype,
        )
        if self.pq_target_ratio is not None:
            return plan.plan_for_ratio(model, self.pq_target_ratio, self.pq_codebook_size, **kw)
        return plan.make_plan(model, self.pq_codebook_size, **kw)

    def adapt(self, model: keras.Model, x, y) -> None:
        """Plans the layers and samples the calibration images (called by
        :meth:`~learner.Learner.fit` before the layer-by-layer quantization and fine-tune).

        Everything that can be wrong with the options for this model (block sizes, the
        target ratio, nothing to quantize) is checked before any sampling or training.

        Example:
            A target ratio the model cannot reach is refused before any sampling:

            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, name="h"),
            ...                       keras.layers.Dense(2)])
            >>> x = np.zeros((32, 4), "float32")
            >>> ProductQuantLearner(pq_target_ratio=1000.0).fit(m, x, np.arange(32) % 2)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `pq_target_ratio`: 1000.0. Accepted: a ratio <= ..., the most this model reaches (codebook size 2, the smallest).
        """
        self.layer_plan = self.make_plan(model)
        self._calib = sampling.calibration_images(x, self.pq_nb_samples, self.train_config.seed)

    def save_artifacts(self, prefix: str) -> dict[str, str]:
        """Writes the compact form beside the decoded Keras model: ``<prefix>.pq.npz``.

        Example:
            >>> ProductQuantLearner().save_artifacts("/tmp/m")  # doctest: +SKIP
            {'pq_codes': '/tmp/m.pq.npz'}
        """
        return {"pq_codes": self.save_compressed(prefix + ".pq.npz")}

    def save_compressed(self, path: str | os.PathLike) -> str:
        """Writes the compact form (packed codes, codebooks, float rest) to ``path``.

        Example:
            >>> ProductQuantLearner().save_compressed("/tmp/m.pq.npz")
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `compressed_model`: None. Accepted: a model compressed by fit() first.
        """
        if self.compressed_model is None:
            raise errors.InvalidArgumentError(
                "compressed_model", None, "a model compressed by fit() first"
            )
        return storage.save(path, self.compressed_model, self.codes)

    # -- the contract ------------------------------------------------------------------
    def prepare(self, model: keras.Model) -> keras.Model:
        """Quantizes layer by layer; returns the model with trainable codebooks.

        Called by :meth:`fit` (which samples the calibration images first).

        Example:
            >>> ProductQuantLearner().prepare(keras.Sequential([keras.Input((2,))]))
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `x`: None. Accepted: training images: call fit() with data (PQ samples activations).
        """
        if self._calib is None:
            raise errors.InvalidArgumentError(
                "x", None, "training images: call fit() with data (PQ samples activations)"
            )
        self._t0 = time.time()
        self._source = model
        the_plan = self.layer_plan or self.make_plan(model)
        current = learner.copy_model(model)
        teacher = self.teacher if self.teacher is not None else learner.copy_model(model)
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._layer_log = {}
        if self.verbose:
            print(
                f"[product-quant] {len(the_plan.quantized)} layers to quantize, planned "
                f"{the_plan.compressed_bytes} B vs {the_plan.float_bytes} B float32 "
                f"(x{the_plan.ratio:.2f})"
            )
        for step, lp in enumerate(the_plan.quantized):
            found[lp.name] = self._quantize_layer(current, model, teacher, lp, step)
        self.report = {"layerwise_wall_s": round(time.time() - self._t0, 1)}
        return layers.to_pq_model(current, found)

    def finalize(self, model: keras.Model) -> keras.Model:
        """Decodes into the original architecture and re-estimates BatchNorm statistics.

        Codebooks are rounded to ``pq_codebook_dtype`` first, so the returned model computes
        exactly what :meth:`save_compressed` stores. Called by :meth:`fit`.

        Example:
            After :meth:`fit`, the returned model is the original architecture whose kernels
            are the stored codes, decoded:

            >>> inp = keras.Input((8, 8, 1))
            >>> h = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inp)
            >>> h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
            >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(h))
            >>> x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
            >>> lrn = ProductQuantLearner(training.TrainConfig(epochs=1, batch_size=32), verbose=0,
            ...                           pq_codebook_size=8, pq_block_size_1x1=4, pq_nb_samples=32,
            ...                           pq_nb_iters_layer=2, pq_bn_batches=1)
            >>> out = lrn.fit(m, x, np.arange(64) % 2)
            >>> kernel = out.get_layer("c1").get_weights()[0]
            >>> type(out.get_layer("c1")).__name__, sorted(lrn.codes)
            ('Conv2D', ['c1', 'fc'])
            >>> bool(np.array_equal(kernel, lrn.codes["c1"].decode().astype("float32")))
            True
        """
        dtype = np.float16 if self.pq_codebook_dtype == "float16" else np.float32
        self.codes = {
            name: storage.LayerCode(
                name,
                self.layer_plan.layer(name).kernel_shape,
                codebook.astype(dtype),
                idx.astype(np.int64),
            )
            for name, (codebook, idx) in layers.read_codes(model).items()
        }
        plain = learner.copy_model(self._source)
        for layer in plain.layers:
            src = model.get_layer(layer.name)
            if layer.name in self.codes:
                w = layer.get_weights()
                w[0] = self.codes[layer.name].decode()
                if src.use_bias:
                    w[1] = src.bias.numpy()
                layer.set_weights(w)
            else:
                layer.set_weights(src.get_weights())
        bn_info: dict[str, Any] = {"layers": 0, "batches": 0, "samples": 0}
        if self.pq_bn_batches and self.train_data is not None:
            bn_info = batchnorm.reestimate(plain, self.train_data, self.pq_bn_batches)
        self.compressed_model = plain
        sizes = self.layer_plan.to_dict()
        for row in sizes["layers"]:
            row.update(self._layer_log.get(row["name"], {}))
        self.report.update(sizes)
        self.report.update(bn_reestimation=bn_info, wall_s=round(time.time() - self._t0, 1))
        if self.verbose:
            print(
                f"[product-quant] {len(self.codes)} layers quantized: {sizes['compressed_bytes']} B "
                f"(codes {sizes['code_bytes']} B + codebooks {sizes['codebook_bytes']} B "
                f"{self.pq_codebook_dtype} + float {sizes['other_float_bytes']} B) vs "
                f"{sizes['float_bytes']} B float32: x{sizes['ratio']:.2f}; "
                f"BN re-estimated on {bn_info['batches']} batches"
            )
        return plain

    # -- one layer ---------------------------------------------------------------------
    def _quantize_layer(self, current, original, teacher, lp: plan.LayerPlan, step: int):
        """EM codebook for layer ``lp`` (written into ``current``), then its fine-tuning."""
        t0 = time.time()
        seed = self.train_config.seed + step
        d, k = lp.block_size, lp.codebook_size
        xs, xt = sampling.sample_layer_inputs(
            current, original, lp.name, self._calib, self.pq_nb_points, seed
        )
        t_sample = time.time() - t0
        layer = current.get_layer(lp.name)
        v = pq.kernel_to_columns(original.get_layer(lp.name).get_weights()[0]).astype(np.float64)
        target = xt.astype(np.float64) @ v
        goal = pq.correct_drift(xs, xt, v) if self.pq_correct_drift else v
        res = pq.em(
            pq.columns_to_subvectors(goal, d), pq.block_grams(xs, d), k, self.pq_nb_iters_em, seed
        )

        def err(codebook, codes):
            cols = pq.subvectors_to_columns(np.asarray(codebook, np.float64)[codes])
            return pq.output_error(xs, target, cols)

        log = {
            "err_float": pq.output_error(xs, target, v),
            "err_init": err(res.init_codebook, res.init_codes),
            "err_em": err(res.codebook, res.codes),
            "em_iterations": res.iterations,
            "empty_resolved": res.empty_resolved,
            "empty_left": res.empty_left,
            "sample_s": round(t_sample, 2),
            "em_s": round(time.time() - t0 - t_sample, 2),
        }
        codebook = res.codebook.astype(np.float32)
        if self.pq_nb_iters_layer and self.train_data is not None:
            t_ft = time.time()
            codebook, kd = self._finetune_layer(current, teacher, lp.name, codebook, res.codes)
            log.update(err_finetuned=err(codebook, res.codes), **kd)
            log["finetune_s"] = round(time.time() - t_ft, 2)
        w = layer.get_weights()
        w[0] = pq.decode(codebook, res.codes, lp.kernel_shape)
        layer.set_weights(w)
        log["wall_s"] = round(time.time() - t0, 2)
        self._layer_log[lp.name] = log
        if self.verbose:
            ft = ""
            if "err_finetuned" in log:
                ft = (
                    f" -> fine-tuned {log['err_finetuned']:.4f} (KD loss {log['kd_first']:.4f}"
                    f" -> {log['kd_last']:.4f})"
                )
            print(
                f"[product-quant] {step + 1}/{len(self.layer_plan.quantized)} {lp.name} "
                f"({lp.layer_type} {'x'.join(map(str, lp.kernel_shape))}): d={d} k={k} "
                f"sub-vectors={lp.n_subvectors}; output error: float {log['err_float']:.4f}, "
                f"EM {log['err_init']:.4f} -> {log['err_em']:.4f} ({res.iterations} it){ft}; "
                f"{log['wall_s']} s (sampling {log['sample_s']}, EM {log['em_s']}, "
                f"fine-tuning {log.get('finetune_s', 0.0)})"
            )
        return codebook, res.codes

    def _finetune_layer(self, current, teacher, name, codebook, codes) -> tuple[np.ndarray, dict]:
        """Distils into this layer's codewords only; returns them and the KD loss curve.

        Label-free, as in the paper: the loss is the KD term alone (the teacher's soft
        targets), so a layer that already reproduces the teacher has nothing to move. The
        whole network runs in inference mode (frozen BatchNorm statistics, no dropout).
        """
        n = self.pq_nb_iters_layer
        student = layers.to_pq_model(current, {name: (codebook, codes)}, trainable=[name])
        var = student.get_layer(name).codebook
        temperature = (self.distillation or distillation.DistillationConfig()).temperature
        cfg = self.train_config.replace(lr_schedule="constant", warmup_epochs=0.0, weight_decay=0.0)
        optimizer = training.build_optimizer(cfg, n)

        @tf.function
        def train_step(x):
            target = teacher(x, training=False)
            with tf.GradientTape() as tape:
                loss = distillation.kd_loss(target, student(x, training=False), temperature)
            optimizer.apply_gradients([(tape.gradient(loss, var), var)])
            return loss

        losses = [
            float(train_step(batch[0] if isinstance(batch, tuple | list) else batch))
            for batch in self.train_data.repeat().take(n)
        ]
        head = max(1, min(10, n // 4))  # average a few steps: single batches are noisy
        return var.numpy(), {
            "kd_first": float(np.mean(losses[:head])),
            "kd_last": float(np.mean(losses[-head:])),
        }
