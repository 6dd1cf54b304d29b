"""Cluster-preserving int8 quantization-aware training (CQAT) of a clustered model, via TFMOT.

Plain QAT after clustering would let every weight drift off its centroid. TFMOT's
``Default8BitClusterPreserveQuantizeScheme`` keeps each weight tied to a centroid during
QAT and trains the centroids: the int8 file then holds at most ``2 ** bits`` distinct
values per output channel of a convolution (TFMOT re-extracts a convolution's centroids
*per output channel*, as TFLite quantizes it per channel) and per Dense kernel (quantized
per tensor). :func:`cluster_preserving_qat_model` builds it through
:func:`pocketflow_tf.qat.quantize_model` (which handles layers TFMOT's annotation refuses).

Two TFMOT 0.8.1 limits are handled here (both checked when this was written):

* A layer with weights that TFMOT's default 8-bit registry quantizes but the
  cluster-preserving registry does not know (it knows Conv2D, Dense and DepthwiseConv2D;
  e.g. ``Conv2DTranspose`` is refused) fails ``quantize_apply`` -- after the clustering
  fine-tune, in a naive pipeline. :func:`check_int8_quantizable` dry-runs the wrap on the
  input model, so the learner refuses such a model before training. (Layers the default
  registry does not know at all run in float during QAT, see :mod:`pocketflow_tf.qat`.)
* A CQAT model saved as ``.h5`` does not load again: its wrappers' configs do not record the
  cluster-preserving quantizers, so the loader builds default quantizers that expect fewer
  weights ("Layer expects 4 weight(s). Received 7"). :func:`to_default_qat` copies the
  trained CQAT model into TFMOT's *default* 8-bit QAT model: the same inference graph and
  int8 export (in inference both use the stored kernel and ranges), but it round-trips
  ``.h5`` like :mod:`pocketflow_tf.learners.uniform_quant` models do.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf.learners.non_uniform import cqat
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(4, 3),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> _ = m.layers[0].kernel.assign(np.sign(m.layers[0].kernel.numpy()) * 0.25)
    >>> q = cqat.cluster_preserving_qat_model(m)
    >>> [w.name.split("/")[-1] for w in q.layers[1].weights][:3]
    ['kernel:0', 'bias:0', 'cluster_centroids_tf:0']
    >>> d = cqat.to_default_qat(q, m, check_inputs=np.ones((2, 4, 4, 1), "float32"))
    >>> [type(l).__name__ for l in d.layers][:2]
    ['QuantizeLayer', 'QuantizeWrapperV2']
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import numpy as np
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (  # noqa: E501
    cluster_preserve_quantize_registry as cp_registry,
)
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (  # noqa: E501
    default_8bit_cluster_preserve_quantize_scheme as cp_scheme,
)

from pocketflow_tf import errors, qat
from pocketflow_tf.compat import keras, tf

#: Variables the cluster-preserving quantizers add to a QAT wrapper (name suffixes).
CLUSTER_VARIABLES = (
    cp_registry.CLUSTER_CENTROIDS,
    cp_registry.ORIGINAL_WEIGHTS,
    cp_registry.PULLING_INDICES,
)


def cluster_preserving_qat_model(model: keras.Model) -> keras.Model:
    """A CQAT copy of a stripped clustered model (same weights, fake-quantised, clusters kept).

    Args:
        model: A functional or Sequential model without TFMOT wrappers, whose clustered
            kernels hold few distinct values.

    Returns:
        The quantize-wrapped model; train it with ``compile``/``fit`` (or the learner).

    Raises:
        UnsupportedModelError: For subclassed or already quantized models.

    Example:
        >>> q = cluster_preserving_qat_model(stripped)  # doctest: +SKIP
    """
    # preserve_sparsity=False: this is CQAT, not PCQAT; TFMOT would switch it off anyway
    # for kernels without exact zeros, logging a warning per layer.
    scheme = cp_scheme.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False)
    with warnings.catch_warnings():
        # "No clustering performed on layer ...": TFMOT re-extracts centroids from every
        # kernel, and says so for the unclustered (float-fallback) ones, which are then
        # quantized as in plain QAT -- the intended behaviour.
        warnings.filterwarnings("ignore", message="No clustering performed")
        return qat.quantize_model(model, scheme)


def check_int8_quantizable(model: keras.Model) -> None:
    """Raises before training when CQAT cannot wrap ``model`` (a dry run of the wrap).

    Args:
        model: The model about to be clustered (unwrapped).

    Raises:
        InvalidArgumentError: Naming ``nuql_int8`` and TFMOT's reason, e.g. a layer type
            the cluster-preserving registry does not support.
        UnsupportedModelError: For subclassed models.

    Example:
        >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2DTranspose(2, 3),
        ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> check_int8_quantizable(m)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `nuql_int8`: True. Accepted: False for this model: cluster-preserving int8 QAT cannot wrap it (Layer conv2d_transpose...Conv2DTranspose...); its clustered float model deploys as a float (or post-training int8) .tflite.
    """
    try:
        cluster_preserving_qat_model(model)
    except errors.UnsupportedModelError:
        raise
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise errors.InvalidArgumentError(
            "nuql_int8",
            True,
            f"False for this model: cluster-preserving int8 QAT cannot wrap it ({e}); its "
            "clustered float model deploys as a float (or post-training int8) .tflite",
        ) from None


def to_default_qat(
    cqat_model: keras.Model, plain_model: keras.Model, *, check_inputs: np.ndarray | None = None
) -> keras.Model:
    """TFMOT's default 8-bit QAT model carrying a trained CQAT model's weights.

    Both wrap the same plain model, layer for layer; the CQAT wrappers only add the
    :data:`CLUSTER_VARIABLES`, which inference does not read (it uses the stored, clustered
    kernel and the learned ranges). The copy therefore computes the same outputs and
    converts to the same int8 file, and it saves and loads as ``.h5``.

    Args:
        cqat_model: The trained model from :func:`cluster_preserving_qat_model`.
        plain_model: The plain model it was built from.
        check_inputs: Optional inputs on which both models must give the same outputs.

    Returns:
        The default QAT model (do not train it further: clusters are no longer enforced).

    Raises:
        PocketFlowError: If the two models do not line up layer for layer, or differ on
            ``check_inputs``.

    Example:
        >>> d = to_default_qat(trained_cqat, stripped, check_inputs=x[:32])  # doctest: +SKIP
    """
    default = qat.quantize_model(plain_model)
    if len(default.layers) != len(cqat_model.layers):
        raise errors.PocketFlowError(
            f"CQAT and default QAT models differ in layer count ({len(cqat_model.layers)} vs "
            f"{len(default.layers)})"
        )
    for src, dst in zip(cqat_model.layers, default.layers, strict=True):
        values = [
            w.numpy() for w in src.weights if not w.name.split(":")[0].endswith(CLUSTER_VARIABLES)
        ]
        shapes = [tuple(w.shape) for w in dst.weights]
        if type(src) is not type(dst) or [v.shape for v in values] != shapes:
            raise errors.PocketFlowError(
                f"CQAT layer {src.name!r} ({type(src).__name__}) does not line up with default "
                f"QAT layer {dst.name!r} ({type(dst).__name__}): weight shapes "
                f"{[v.shape for v in values]} vs {shapes}"
            )
        dst.set_weights(values)
    if check_inputs is not None:
        a = np.asarray(cqat_model(check_inputs, training=False))
        b = np.asarray(default(check_inputs, training=False))
        if not np.allclose(a, b, rtol=0, atol=1e-5):
            raise errors.PocketFlowError(
                "the default QAT copy of the CQAT model computes other outputs (max |diff| "
                f"{float(np.max(np.abs(a - b))):.3g})"
            )
    return default


class _DropMissingGradientWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Gradients do not exist for variables" not in record.getMessage()


@contextlib.contextmanager
def quiet_missing_gradients() -> Iterator[None]:
    """Silences Keras's "Gradients do not exist for variables" warning while CQAT trains.

    CQAT computes each clustered kernel from its centroids, so the kernel variable itself
    never gets a gradient; Keras then warns once per step batch that the user may have
    forgotten a loss, which is misleading here.

    Example:
        >>> with quiet_missing_gradients():
        ...     pass
    """
    logger = tf.get_logger()
    flt = _DropMissingGradientWarning()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


__all__ = [
    "CLUSTER_VARIABLES",
    "check_int8_quantizable",
    "cluster_preserving_qat_model",
    "quiet_missing_gradients",
    "to_default_qat",
]
