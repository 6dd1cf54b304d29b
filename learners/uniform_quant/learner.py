"""Uniform quantization-aware training to a full-integer ``.tflite`` (``uniform``), with
per-layer mixed weight precision.

Starts from the given trained model (PocketFlow's uniform learner trained from scratch
unless told otherwise), wraps it for QAT with TFMOT's default 8-bit scheme
(:func:`pocketflow_tf.qat.quantize_model`: per-channel symmetric weights, per-tensor
asymmetric int8 activations, BatchNorm folded into its convolution), fine-tunes it --
distilled from the float model when distillation is on -- and returns the QAT model. Its
deployable form is the ``"int8"`` export (:func:`pocketflow_tf.tflite_verify.export_tflite`),
which the run scripts make and verify; the fake-quantized Keras model predicts what that
file will compute. Post-training int8 (the same export of the float model, no training) is
the cheap baseline.

Weights can take fewer bits than 8, per layer:

* ``uql_weight_bits=b``: every quantized kernel on a ``b``-bit grid (uniform low precision);
* ``uql_equivalent_bits=B``: mixed precision, each layer between ``uql_w_bit_min`` and
  ``uql_w_bit_max`` bits, the weight-weighted average at most ``B``. The allocation is
  sensitivity-based by default (:mod:`~pocketflow_tf.learners.uniform_quant.bits`: measured
  per layer and bit-width on training images, then an exact knapsack), or given by a
  ``bits_search`` hook (a search with issue 6's optimisers).

Activations stay 8-bit: the file is an ordinary int8 model whose ``b``-bit kernels hold at
most ``2**b - 1`` values per output channel, checked in the file after training
(:attr:`UniformQuantLearner.report`), and the bit-packed storage is reported
(:mod:`~pocketflow_tf.learners.uniform_quant.storage`). Layers with weights that TFMOT
cannot quantize run in float and are named in a warning and the report.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import training
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(4, 3),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> x, y = np.random.rand(32, 4, 4, 1).astype("float32"), np.arange(32) % 2
    >>> lrn = UniformQuantLearner(training.TrainConfig(epochs=1, batch_size=8), verbose=0)
    >>> type(lrn.fit(m, x, y).layers[1]).__name__
    'QuantizeWrapperV2'
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, ClassVar

from pocketflow_tf import errors, learner, model_io, options, qat, tflite_export, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.uniform_quant import bits as bits_lib
from pocketflow_tf.learners.uniform_quant import bits_search as search_lib
from pocketflow_tf.learners.uniform_quant import storage as storage_lib

logger = logging.getLogger(__name__)

#: Calibration images the sensitivities are measured on (from the training data).
DEFAULT_CALIB_SAMPLES = 1024
#: Layers with weights that are not quantized on purpose: folded into a convolution.
_FOLDED = ("BatchNormalization",)


_BITS = {"low": 2, "high": 8, "accepted": bits_lib.BITS_ACCEPTED}


@dataclasses.dataclass(frozen=True)
class UniformQuantOptions(options.Options):
    """The ``uql_*`` options of :class:`UniformQuantLearner` (see its arguments).

    Example:
        >>> UniformQuantOptions(uql_w_bit_min=6, uql_w_bit_max=4)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `uql_w_bit_min`: 6. Accepted: at most uql_w_bit_max (4).
    """

    uql_weight_bits: int = options.option(8, help="weight bits of every quantized layer", **_BITS)
    uql_activation_bits: int = options.option(
        8,
        help="activation bits (8: LiteRT computes in int8)",
        low=8,
        high=8,
        accepted="8 (the int8 .tflite computes activations in 8 bits; lower weight bits are "
        "uql_weight_bits / uql_equivalent_bits)",
    )
    uql_equivalent_bits: float | None = options.option(
        None,
        help="mixed precision: per-layer weight bits averaging at most this (weighted by "
        "weights), allocated by measured sensitivity",
        accepted="a number in [uql_w_bit_min, uql_w_bit_max], or None (off)",
    )
    uql_w_bit_min: int = options.option(
        2, help="mixed precision: fewest bits of one layer", **_BITS
    )
    uql_w_bit_max: int = options.option(8, help="mixed precision: most bits of one layer", **_BITS)
    uql_calib_samples: int = options.option(
        DEFAULT_CALIB_SAMPLES,
        help="mixed precision: training images the sensitivities are measured on",
        low=1,
        accepted="a positive integer",
    )
    uql_report_tflite: bool = options.option(
        True,
        help="after training, convert to int8 once and check that each kernel keeps its "
        "2**b - 1 levels in the file (when some layer has < 8 bits)",
    )
    uql_bits_search: str = options.option(
        "sensitivity",
        choices=("sensitivity", *search_lib.OPTIMIZERS),
        help="mixed precision: the summed per-layer sensitivities (solved exactly) or an "
        "optimiser scoring whole allocations from there",
    )
    uql_search_trials: int = options.option(
        40, help="mixed precision: allocations searched", low=1, accepted="a positive integer"
    )
    bits_search: bits_lib.BitsSearch | None = options.hook(
        "(layers, budget, bit_min, bit_max) -> {layer: bits}",
        help="replaces the sensitivity allocation of mixed precision",
    )

    def check(self) -> None:
        if self.uql_w_bit_min > self.uql_w_bit_max:
            raise errors.InvalidArgumentError(
                "uql_w_bit_min", self.uql_w_bit_min, f"at most uql_w_bit_max ({self.uql_w_bit_max})"
            )
        if self.uql_equivalent_bits is not None:
            bits_lib.check_budget(self.uql_equivalent_bits, self.uql_w_bit_min, self.uql_w_bit_max)
        if self.bits_search is not None and self.uql_equivalent_bits is None:
            raise errors.InvalidArgumentError(
                "bits_search", self.bits_search, "None unless uql_equivalent_bits is given"
            )


@learner.register("uniform", "uniform-quant", "UniformQuantLearner")
class UniformQuantLearner(learner.Learner):
    """Quantization-aware fine-tuning of a trained model: int8, or fewer weight bits.

    Args:
        train_config: Fine-tuning settings (see :class:`learner.Learner`); QAT starts from
            trained weights, so a tenth of the from-scratch learning rate is typical.
        uql_weight_bits: Weight bit-width of every quantized layer (2..8) when
            ``uql_equivalent_bits`` is not given.
        uql_activation_bits: Activation bit-width; 8 (LiteRT computes in int8).
        uql_equivalent_bits: Mixed precision: the largest weighted average bit-width of
            the kernels, in ``[uql_w_bit_min, uql_w_bit_max]`` (``None``: off).
        uql_w_bit_min: Fewest bits of one layer under mixed precision (2..8).
        uql_w_bit_max: Most bits of one layer under mixed precision (2..8).
        uql_calib_samples: Training images the sensitivities are measured on.
        uql_bits_search: Mixed precision: ``"sensitivity"`` (the summed one-layer
            sensitivities, solved exactly), or an optimiser (``"tpe"``, ``"gp"``,
            ``"random"``) searching whole allocations from there (see
            :mod:`~pocketflow_tf.learners.uniform_quant.bits_search`).
        uql_search_trials: Allocations the optimiser scores.
        uql_report_tflite: After training, convert to int8 once and check in the file that
            each kernel keeps its ``2**b - 1`` levels (only when some layer has < 8 bits).
        bits_search: Mixed precision: ``(layers, budget, bit_min, bit_max) -> {layer: bits}``
            replacing the sensitivity-based default (see
            :mod:`~pocketflow_tf.learners.uniform_quant.bits`).
        **kwargs: Passed to :class:`learner.Learner` (distillation, teacher, log_dir, ...).

    Attributes:
        deploy_modes: The ``.tflite`` modes that deploy what this learner trains.
        save_extension: QAT models are saved as ``.h5`` (see :mod:`pocketflow_tf.qat`).
        weight_bits: After :meth:`prepare`: ``{layer: bits}`` of every quantized kernel.
        report: After :meth:`fit`: bit-widths, sensitivities, bit-packed storage, the file
            check and the layers kept in float (a dict for run records).

    Example:
        >>> UniformQuantLearner(uql_weight_bits=12)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `uql_weight_bits`: 12. Accepted: an integer in 2..8 (symmetric 1-bit weights would keep only the level 0).
    """

    name = "uniform"
    deploy_modes: ClassVar[tuple[str, ...]] = ("int8",)
    save_extension: ClassVar[str] = ".h5"

    Options = UniformQuantOptions

    @classmethod
    def deployment(cls, **learner_options: Any) -> tuple[tuple[str, ...] | None, str]:
        """``("int8", "int4")`` when some layer may get <= 4 bits, else ``("int8",)``.

        The ``int4`` export (:mod:`pocketflow_tf.int4_export`) stores those layers' kernels
        as int4 in the file (two weights a byte); the ``int8`` one keeps them on int8
        storage (their levels show only under gzip).

        Example:
            >>> UniformQuantLearner.deployment(uql_weight_bits=4)
            (('int8', 'int4'), '.h5')
            >>> UniformQuantLearner.deployment()
            (('int8',), '.h5')
        """
        opts = {f.name: f.default for f in dataclasses.fields(cls.Options)}
        opts.update(learner_options)
        mixed = opts["uql_equivalent_bits"] is not None
        low = opts["uql_w_bit_min"] if mixed else opts["uql_weight_bits"]
        try:
            modes = cls.deploy_modes + ("int4",) if low <= 4 else cls.deploy_modes
        except TypeError:  # a bad value: the constructor's check names it
            modes = cls.deploy_modes
        return modes, cls.save_extension

    def __init__(self, train_config: training.TrainConfig | None = None, **kwargs: Any):
        super().__init__(train_config, **kwargs)
        # The sensitivities depend on each worker's data shard: with several workers the
        # chief allocates and the others receive its prepared model.
        self.prepare_on_chief = self.uql_equivalent_bits is not None
        self.weight_bits: dict[str, int] | None = None
        self.report: dict[str, Any] | None = None

    @property
    def mixed(self) -> bool:
        """Whether bit-widths are allocated per layer (``uql_equivalent_bits`` given)."""
        return self.uql_equivalent_bits is not None

    def object_scope(self):
        """TFMOT's quantization wrappers, for rebuilding the prepared model elsewhere."""
        return qat.quantize_scope()

    def prepare(self, model: keras.Model) -> keras.Model:
        """Allocates the weight bits and returns the QAT copy of ``model`` (same weights).

        Example:
            >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(4, 3, name="c"),
            ...                       keras.layers.Flatten(), keras.layers.Dense(2, name="fc")])
            >>> lrn = UniformQuantLearner(uql_weight_bits=4, verbose=0)
            >>> q = lrn.prepare(m)
            >>> lrn.weight_bits, [type(layer).__name__ for layer in q.layers]
            ({'c': 4, 'fc': 4}, ['QuantizeLayer', 'QuantizeWrapperV2', 'QuantizeWrapperV2', 'QuantizeWrapperV2'])
        """
        model_io.require_graph(model, "quantization-aware training")
        infos = bits_lib.layer_infos(model)
        if not infos:
            raise errors.UnsupportedModelError(
                f"model {model.name!r} has no layer whose weights TFMOT quantizes (Conv2D, "
                "DepthwiseConv2D, Dense); nothing to quantize"
            )
        # Stated, not refused: such layers run in float in QAT and the converter gives them
        # float kernels in the int8 file (hybrid). BatchNorm folds into its convolution.
        in_float = [
            layer.name
            for layer in model.layers
            if layer.weights
            and qat.registry_config(layer) is None
            and type(layer).__name__ not in _FOLDED
        ]
        if in_float:
            logger.warning(
                "uniform: layers kept in float (TFMOT has no quantize config for them): %s",
                ", ".join(in_float),
            )
        start = time.time()
        table = search_report = None
        if not self.mixed:
            bits = {i.name: self.uql_weight_bits for i in infos}
            allocation = "uniform"
        elif self.bits_search is not None:
            bits = bits_lib.check_allocation(
                infos,
                self.bits_search(
                    infos, self.uql_equivalent_bits, self.uql_w_bit_min, self.uql_w_bit_max
                ),
                self.uql_equivalent_bits,
                self.uql_w_bit_min,
                self.uql_w_bit_max,
            )
            allocation = "search"
        else:
            x = self.sample_inputs(self.uql_calib_samples)
            if x is None:
                raise errors.InvalidArgumentError(
                    "fit data", None, "training data: mixed precision measures sensitivities on it"
                )
            widths = range(self.uql_w_bit_min, self.uql_w_bit_max + 1)
            if self.verbose:
                print(
                    f"[uniform] measuring sensitivities: {len(infos)} layers x {len(widths)} "
                    f"bit-widths on {len(x)} training images"
                )
            table = bits_lib.measure_sensitivity(model, x, infos, list(widths))
            bits = bits_lib.allocate(infos, table, self.uql_equivalent_bits)
            allocation = "sensitivity"
            if self.uql_bits_search != "sensitivity":
                found = search_lib.search_bits(
                    model,
                    x,
                    infos,
                    self.uql_equivalent_bits,
                    self.uql_w_bit_min,
                    self.uql_w_bit_max,
                    optimizer=self.uql_bits_search,
                    trials=self.uql_search_trials,
                    seed=self.train_config.seed,
                    start=bits,
                )
                bits, allocation = found.bits, self.uql_bits_search
                search_report = {"kl": found.kl, "start_kl": found.start_kl, "trials": found.trials}
        self.weight_bits = bits
        self.report = {
            "allocation": allocation,
            "allocation_s": round(time.time() - start, 2),
            "budget_bits": self.uql_equivalent_bits,
            "layers": [
                {
                    **info.to_dict(),
                    "bits": bits[info.name],
                    "sensitivity": None if table is None else table[info.name],
                }
                for info in infos
            ],
            "float_layers": in_float,
            "search": search_report,
            "storage": storage_lib.storage_report(model, infos, bits).to_dict(),
        }
        if self.verbose:
            st = self.report["storage"]
            print(
                f"[uniform] {allocation} weight bits, average {st['average_bits']:.3f} "
                f"({self.report['allocation_s']} s): {bits}; bit-packed {st['total_bytes']:,} B "
                f"(float32 {st['float_bytes']:,} B, all 8-bit {st['int8_bytes']:,} B)"
            )
        return qat.quantize_model(model, weight_bits={n: b for n, b in bits.items() if b != 8})

    def finalize(self, model: keras.Model) -> keras.Model:
        """Checks the kernels' levels in one int8 conversion (when some layer has < 8 bits).

        Example:
            :meth:`fit` ends with it; with 4-bit kernels the int8 file's kernels hold at most
            16 levels per channel:

            >>> from pocketflow_tf import training
            >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(4, 3, name="c"),
            ...                       keras.layers.Flatten(), keras.layers.Dense(2, name="fc")])
            >>> x, y = np.random.default_rng(0).random((32, 4, 4, 1)).astype("float32"), np.arange(32) % 2
            >>> lrn = UniformQuantLearner(training.TrainConfig(epochs=1, batch_size=8),
            ...                           uql_weight_bits=4, verbose=0)
            >>> _ = lrn.fit(m, x, y)
            >>> [(lv["name"], lv["bits"], lv["max_per_channel"] <= 16, lv["within_limit"])
            ...  for lv in lrn.report["tflite_int8_levels"]]
            [('c', 4, True, True), ('fc', 4, True, True)]
        """
        low = {n: b for n, b in (self.weight_bits or {}).items() if b < 8}
        calib = self.sample_inputs(256) if low and self.uql_report_tflite else None
        if calib is not None and self.report is not None:
            content = tflite_export.convert(model, "int8", representative_data=calib)
            levels = storage_lib.tflite_levels(model, content, low)
            self.report["tflite_int8_levels"] = [lv.to_dict() for lv in levels]
            bad = [
                f"{lv.name} ({lv.max_per_channel} > {2**lv.bits - 1})"
                for lv in levels
                if not lv.within_limit
            ]
            if bad:
                logger.warning("uniform: int8 kernels with more levels than their bits: %s", bad)
        return model
