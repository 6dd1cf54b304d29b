"""Trainable product-quantized layers: a codebook and fixed codes in place of a kernel.

:class:`PQConv2D` and :class:`PQDense` are ``Conv2D`` / ``Dense`` whose kernel is decoded on
every call from a trainable ``codebook`` ``(k, d)`` and non-trainable integer ``codes``
``(m, O)`` (layout of :mod:`.pq`). Only the codewords train; assignments stay fixed.

The decoding gather gives a codeword the *sum* of the gradients of the sub-vectors that use
it; :func:`mean_gather` divides by their number, so a codeword moves like the average of its
sub-vectors would under plain SGD, whatever its popularity (Stock et al., Sec. 3.3). Without
this, popular codewords would take steps hundreds of times larger than rare ones.

These layers only exist while fine-tuning: the learner's final model is a plain Keras model
with the decoded kernels (:func:`to_pq_model` builds the trainable form, the learner decodes
it back).

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> layer = PQDense(2, pq_codebook_size=4, pq_block_size=2)
    >>> _ = layer(np.zeros((1, 4), "float32"))
    >>> sorted(w.name.split("/")[-1] for w in layer.trainable_weights)  # no kernel variable
    ['bias:0', 'codebook:0']
    >>> layer.kernel.shape.as_list()
    [4, 2]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pocketflow_tf.compat import keras, tf


@tf.custom_gradient
def mean_gather(codebook: tf.Tensor, codes: tf.Tensor):
    """``tf.gather(codebook, codes)`` whose codebook gradient is averaged per codeword.

    The gradient of codeword ``c`` is the mean of the gradients of the gathered rows that
    use it (0 for a codeword nobody uses); ``codes`` get no gradient.

    Example:
        >>> cb = tf.Variable([[0.0], [0.0]])
        >>> with tf.GradientTape() as tape:
        ...     rows = mean_gather(tf.convert_to_tensor(cb), tf.constant([0, 0, 1]))
        ...     loss = tf.reduce_sum(rows * tf.constant([[1.0], [3.0], [5.0]]))
        >>> tape.gradient(loss, cb).numpy().ravel().tolist()  # (1 + 3) / 2 and 5 / 1
        [2.0, 5.0]
    """
    out = tf.gather(codebook, codes)

    def grad(upstream):
        k, d = tf.shape(codebook)[0], tf.shape(codebook)[1]
        flat = tf.reshape(codes, [-1])
        sums = tf.math.unsorted_segment_sum(tf.reshape(upstream, [-1, d]), flat, k)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(flat, dtype=upstream.dtype), flat, k)
        return sums / tf.maximum(counts, 1.0)[:, None], None

    return out, grad


def decode_kernel(codebook, codes, kernel_shape) -> tf.Tensor:
    """TensorFlow version of :func:`.pq.decode` with averaged codeword gradients.

    Example:
        >>> cb = tf.constant([[0.0, 1.0], [2.0, 3.0]])
        >>> decode_kernel(cb, tf.constant([[0, 1]]), (2, 2)).numpy().tolist()
        [[0.0, 2.0], [1.0, 3.0]]
    """
    sub = mean_gather(tf.convert_to_tensor(codebook), tf.convert_to_tensor(codes))
    m, cout, d = sub.shape
    cols = tf.reshape(tf.transpose(sub, [0, 2, 1]), (m * d, cout))
    if len(kernel_shape) == 2:
        return cols
    kh, kw, cin, _ = kernel_shape
    return tf.transpose(tf.reshape(cols, (cin, kh, kw, cout)), [1, 2, 0, 3])


class _PQMixin:
    """Codebook and codes in place of the kernel; ``kernel`` is decoded when read."""

    def _init_pq(self, pq_codebook_size: int, pq_block_size: int) -> None:
        self.pq_codebook_size = int(pq_codebook_size)
        self.pq_block_size = int(pq_block_size)
        self.pq_kernel_shape: tuple[int, ...] | None = None

    def _build_codebook(self, kernel_shape: tuple[int, ...]) -> None:
        self.pq_kernel_shape = tuple(int(s) for s in kernel_shape)
        rows = int(np.prod(self.pq_kernel_shape[:-1]))
        if rows % self.pq_block_size:
            raise ValueError(
                f"{self.name}: block size {self.pq_block_size} does not divide the kernel's "
                f"{rows} input rows"
            )
        self.codebook = self.add_weight(
            name="codebook",
            shape=(self.pq_codebook_size, self.pq_block_size),
            initializer="zeros",
            trainable=True,
        )
        self.codes = self.add_weight(
            name="codes",
            shape=(rows // self.pq_block_size, self.pq_kernel_shape[-1]),
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )

    def _build_bias(self, units: int) -> None:
        # The parent's bias, created as Conv2D/Dense.build would (their build is bypassed
        # because it would create the kernel variable).
        self.bias = (
            self.add_weight(
                name="bias",
                shape=(units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
            )
            if self.use_bias
            else None
        )

    @property
    def kernel(self) -> tf.Tensor:
        # Read by the parent's call(): the layer computes exactly Conv2D/Dense on the decoded
        # kernel, with the parent's bias and activation handling.
        return decode_kernel(self.codebook, self.codes, self.pq_kernel_shape)

    def _pq_config(self, config: dict[str, Any]) -> dict[str, Any]:
        config.update(pq_codebook_size=self.pq_codebook_size, pq_block_size=self.pq_block_size)
        return config


@keras.utils.register_keras_serializable(package="pocketflow_tf", name="PQConv2D")
class PQConv2D(_PQMixin, keras.layers.Conv2D):
    """A ``Conv2D`` whose kernel is ``codebook[codes]`` (see the module docstring).

    Args:
        *args: ``Conv2D`` arguments.
        pq_codebook_size: Number of codewords ``k``.
        pq_block_size: Sub-vector length ``d``; divides ``kh * kw * c_in``.
        **kwargs: ``Conv2D`` keyword arguments.

    Example:
        >>> layer = PQConv2D(4, 3, pq_codebook_size=8, pq_block_size=9)
        >>> _ = layer(tf.zeros((1, 5, 5, 2)))
        >>> layer.codes.shape.as_list(), layer.kernel.shape.as_list()
        ([2, 4], [3, 3, 2, 4])
    """

    def __init__(self, *args, pq_codebook_size: int, pq_block_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_pq(pq_codebook_size, pq_block_size)

    def build(self, input_shape):
        # Conv.build minus the kernel variable (it would be dead weight).
        input_shape = tf.TensorShape(input_shape)
        cin = self._get_input_channel(input_shape)
        self.compute_output_shape(input_shape)
        self._build_codebook(self.kernel_size + (cin // self.groups, self.filters))
        self._build_bias(self.filters)
        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2, axes={self._get_channel_axis(): cin}
        )
        keras.layers.Layer.build(self, input_shape)

    def get_config(self) -> dict[str, Any]:
        """``Conv2D``'s config plus the codebook size and block size.

        Example:
            >>> PQConv2D(4, 3, pq_codebook_size=8, pq_block_size=9).get_config()["pq_block_size"]
            9
        """
        return self._pq_config(super().get_config())


@keras.utils.register_keras_serializable(package="pocketflow_tf", name="PQDense")
class PQDense(_PQMixin, keras.layers.Dense):
    """A ``Dense`` whose kernel is ``codebook[codes]`` (see the module docstring).

    Args:
        units: Output size.
        pq_codebook_size: Number of codewords ``k``.
        pq_block_size: Sub-vector length ``d``; divides the input size.
        **kwargs: ``Dense`` keyword arguments.

    Example:
        >>> layer = PQDense(3, pq_codebook_size=2, pq_block_size=4)
        >>> layer(tf.ones((2, 8))).shape.as_list()
        [2, 3]
    """

    def __init__(self, units: int, *, pq_codebook_size: int, pq_block_size: int, **kwargs):
        super().__init__(units, **kwargs)
        self._init_pq(pq_codebook_size, pq_block_size)

    def build(self, input_shape):
        # Dense.build minus the kernel variable.
        input_shape = tf.TensorShape(input_shape)
        last_dim = int(input_shape[-1])
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: last_dim})
        self._build_codebook((last_dim, self.units))
        self._build_bias(self.units)
        keras.layers.Layer.build(self, input_shape)

    def get_config(self) -> dict[str, Any]:
        """``Dense``'s config plus the codebook size and block size.

        Example:
            >>> PQDense(3, pq_codebook_size=2, pq_block_size=4).get_config()["pq_codebook_size"]
            2
        """
        return self._pq_config(super().get_config())


def is_pq_layer(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is a :class:`PQConv2D` or :class:`PQDense`.

    Example:
        >>> is_pq_layer(PQDense(1, pq_codebook_size=2, pq_block_size=1)), is_pq_layer(keras.layers.Dense(1))
        (True, False)
    """
    return isinstance(layer, _PQMixin)


def to_pq_model(
    model: keras.Model,
    codes: Mapping[str, tuple[np.ndarray, np.ndarray]],
    trainable: Iterable[str] | None = None,
) -> keras.Model:
    """A copy of ``model`` whose layers named in ``codes`` are PQ layers.

    Args:
        model: A plain model (functional or Sequential) with Conv2D/Dense layers.
        codes: ``{layer name: (codebook (k, d), codes (m, O))}``.
        trainable: When given, only these layers stay trainable (every other layer is
            frozen, and frozen BatchNorm layers run in inference mode); ``None`` keeps the
            model's own trainable flags.

    Returns:
        The new model; the weights of other layers (and the PQ layers' biases) are copied.

    Example:
        >>> inp = keras.Input((4,))
        >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(inp))
        >>> q = to_pq_model(m, {"fc": (np.ones((2, 2)), np.zeros((2, 2), int))})
        >>> type(q.get_layer("fc")).__name__, q.get_layer("fc").kernel.numpy().tolist()
        ('PQDense', [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    """

    def clone(layer):
        if layer.name not in codes:
            return layer.__class__.from_config(layer.get_config())
        codebook, _ = codes[layer.name]
        config = layer.get_config()
        config.update(pq_codebook_size=codebook.shape[0], pq_block_size=codebook.shape[1])
        cls = PQDense if isinstance(layer, keras.layers.Dense) else PQConv2D
        return cls.from_config(config)

    out = keras.models.clone_model(model, clone_function=clone)
    keep = None if trainable is None else set(trainable)
    for layer in out.layers:
        src = model.get_layer(layer.name)
        if layer.name in codes:
            codebook, idx = codes[layer.name]
            layer.codebook.assign(np.asarray(codebook, dtype=np.float32))
            layer.codes.assign(np.asarray(idx, dtype=np.int32))
            if layer.use_bias:
                layer.bias.assign(src.bias)
        else:
            layer.set_weights(src.get_weights())
        layer.trainable = src.trainable if keep is None else layer.name in keep
    return out


def read_codes(model: keras.Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (codebook, codes)}`` of every PQ layer of ``model`` (NumPy copies).

    Example:
        >>> inp = keras.Input((4,))
        >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(inp))
        >>> q = to_pq_model(m, {"fc": (np.ones((2, 2)), np.zeros((2, 2), int))})
        >>> {n: c.shape for n, (c, _) in read_codes(q).items()}
        {'fc': (2, 2)}
    """
    return {
        layer.name: (layer.codebook.numpy().copy(), layer.codes.numpy().copy())
        for layer in model.layers
        if is_pq_layer(layer)
    }
