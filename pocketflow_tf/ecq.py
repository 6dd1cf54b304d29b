"""Error-compensated quantized gradient exchange (ECQ-SGD, Wu et al. ICML 2018).

Each worker quantizes its gradient before the exchange and keeps what quantization lost
in a per-worker accumulator that is added back at the next step, so the error does not
build up as a bias. Per tensor and step, with ``h`` the worker's accumulator::

    a = g + alpha * h              # compensate the error of earlier steps
    q = Q(a)                       # bucketed uniform quantizer, ``bits`` per value
    h = beta * h + (g - q)         # alpha = beta = 1 gives h = a - q

``Q`` scales every bucket of ``bucket_size`` values by its largest magnitude and rounds
to ``2**(bits-1) - 1`` levels each side of zero. The codes are packed ``32 // bits`` to
an ``int32`` word (the collectives of TensorFlow and Horovod carry no 4-bit or 2-bit
type) and exchanged with an all-gather beside one float32 scale per bucket; every worker
decodes all workers' codes and averages them, so all apply the same update and the
weights stay identical. Full-precision data-parallel training instead all-reduces 4
bytes per value.

The exchange plugs into the optimiser's ``aggregate_gradients`` hook, which Keras 2
calls with the local gradients before applying them; see :func:`wrap_optimizer`.

Example:
    >>> from pocketflow_tf.compat import tf
    >>> codec = ECQConfig(bits=4, bucket_size=4)
    >>> g = tf.constant([0.7, -0.1, 0.0, 0.35, 1.0, 2.0, -3.0, 0.5])
    >>> words, scales, sent = quantize(g, codec)
    >>> words.dtype.name, int(words.shape[0]), int(scales.shape[0])
    ('int32', 1, 2)
    >>> [round(v, 2) for v in dequantize(words, scales, 8, codec).numpy().tolist()]
    [0.7, -0.1, 0.0, 0.4, 0.86, 2.14, -3.0, 0.43]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from pocketflow_tf import errors
from pocketflow_tf.compat import keras, tf

_BITS = (2, 4, 8)


@dataclasses.dataclass(frozen=True)
class ECQConfig:
    """Settings of the quantized gradient exchange.

    Attributes:
        bits: Bits per gradient value: 2, 4 or 8 (they pack evenly into 32-bit words).
        bucket_size: Values sharing one float32 scale (>= 2).
        alpha: Weight of the accumulated error added before quantizing (> 0).
        beta: Decay of the accumulated error (in (0, 1]).

    Example:
        >>> ECQConfig(bits=3)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `ecq_bits`: 3. Accepted: one of (2, 4, 8).
    """

    bits: int = 4
    bucket_size: int = 512
    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self):
        if self.bits not in _BITS:
            raise errors.InvalidArgumentError("ecq_bits", self.bits, f"one of {_BITS}")
        if not isinstance(self.bucket_size, int) or self.bucket_size < 2:
            raise errors.InvalidArgumentError(
                "ecq_bucket_size", self.bucket_size, "an integer >= 2"
            )
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise errors.InvalidArgumentError("ecq_alpha", self.alpha, "a number > 0")
        if not 0 < self.beta <= 1:
            raise errors.InvalidArgumentError("ecq_beta", self.beta, "a number in (0, 1]")

    @property
    def levels(self) -> int:
        """Quantization levels each side of zero."""
        return 2 ** (self.bits - 1) - 1

    @property
    def per_word(self) -> int:
        """Codes packed into one int32 word."""
        return 32 // self.bits


def payload_bytes(num_values: int, config: ECQConfig | None) -> int:
    """Bytes one worker sends for a tensor of ``num_values`` values in one exchange.

    ``None`` is the full-precision all-reduce (4 bytes per value).

    Example:
        >>> payload_bytes(1000, None), payload_bytes(1000, ECQConfig(bits=4))
        (4000, 508)
    """
    if config is None:
        return 4 * num_values
    words = -(-num_values // config.per_word)
    buckets = -(-num_values // config.bucket_size)
    return 4 * words + 4 * buckets


def quantize(values: tf.Tensor, config: ECQConfig) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Quantizes a tensor to packed codes.

    Args:
        values: Any float tensor (flattened here).
        config: The codec.

    Returns:
        ``(words, scales, dequantized)``: the packed int32 codes, one float32 scale per
        bucket, and what the receivers will decode (same shape as ``values``), from which
        the caller computes the quantization error.

    Example:
        >>> w, s, d = quantize(tf.constant([1.0, -1.0, 0.25]), ECQConfig(bits=2, bucket_size=8))
        >>> d.numpy().tolist()
        [1.0, -1.0, 0.0]
    """
    flat = tf.reshape(tf.cast(values, tf.float32), [-1])
    n = tf.size(flat)
    bucket = config.bucket_size
    nb = (n + bucket - 1) // bucket
    padded = tf.pad(flat, [[0, nb * bucket - n]])
    buckets = tf.reshape(padded, [nb, bucket])
    scales = tf.reduce_max(tf.abs(buckets), axis=1) / config.levels
    safe = tf.where(scales > 0, scales, tf.ones_like(scales))
    codes = tf.clip_by_value(tf.round(buckets / safe[:, None]), -config.levels, config.levels)
    dequantized = tf.reshape(tf.reshape(codes * scales[:, None], [-1])[:n], tf.shape(values))
    # Codes in [-levels, levels] become unsigned [1, 2**bits - 1] and are OR-ed into words
    # (disjoint bit fields, so a sum in int64 is the OR without overflow).
    unsigned = tf.cast(tf.reshape(codes, [-1])[:n], tf.int64) + config.levels + 1
    k = config.per_word
    nw = (n + k - 1) // k
    unsigned = tf.reshape(tf.pad(unsigned, [[0, nw * k - n]]), [nw, k])
    shifts = tf.constant([config.bits * i for i in range(k)], tf.int64)
    words64 = tf.reduce_sum(tf.bitwise.left_shift(unsigned, shifts[None, :]), axis=1)
    words = tf.bitcast(tf.cast(words64, tf.uint32), tf.int32)
    return words, scales, tf.cast(dequantized, values.dtype)


def dequantize(words: tf.Tensor, scales: tf.Tensor, num_values: int, config: ECQConfig):
    """Decodes packed codes back to float32 values (flat, ``num_values`` long).

    Example:
        >>> cfg = ECQConfig(bits=8, bucket_size=8)
        >>> w, s, _ = quantize(tf.constant([0.5, -2.0]), cfg)
        >>> [round(v, 3) for v in dequantize(w, s, 2, cfg).numpy().tolist()]
        [0.504, -2.0]
    """
    k = config.per_word
    unsigned = tf.cast(tf.bitcast(words, tf.uint32), tf.int64)
    shifts = tf.constant([config.bits * i for i in range(k)], tf.int64)
    mask = tf.constant(2**config.bits - 1, tf.int64)
    fields = tf.bitwise.bitwise_and(tf.bitwise.right_shift(unsigned[:, None], shifts), mask)
    codes = tf.cast(tf.reshape(fields, [-1])[:num_values], tf.float32) - (config.levels + 1)
    bucket = config.bucket_size
    per_value_scale = tf.repeat(scales, bucket)[:num_values]
    return codes * per_value_scale


#: ``gather(tensor) -> tensor`` concatenating every worker's ``tensor`` along axis 0, in
#: rank order, identical on all workers.
Gather = Callable[[tf.Tensor], tf.Tensor]


class GradientCodec:
    """Per-worker state of the exchange: the error accumulators and the byte counts.

    Args:
        config: The codec settings.
        num_workers: Workers taking part in the exchange.
        average: Return the workers' mean (each gradient is its worker's own batch mean,
            as with Horovod) rather than their sum (``tf.distribute`` already divides each
            replica's loss by the number of replicas, so its gradients add up).

    Example:
        >>> codec = GradientCodec(ECQConfig(bits=4, bucket_size=8), num_workers=1)
        >>> v = tf.Variable(tf.zeros(3))
        >>> codec.build([v])
        >>> out = codec.exchange([tf.constant([0.3, -0.2, 0.1])], lambda t: t)
        >>> codec.bytes_per_step, codec.float_bytes_per_step
        (8, 12)
    """

    def __init__(self, config: ECQConfig, num_workers: int, *, average: bool = True):
        self.config = config
        self.num_workers = int(num_workers)
        self.average = average
        self.errors: list[tf.Variable] | None = None
        self.bytes_per_step = 0
        self.float_bytes_per_step = 0

    def build(self, variables: Sequence[tf.Variable]) -> None:
        """Creates one zero accumulator per variable (once).

        ``ON_READ`` synchronisation keeps one independent copy per worker under
        ``tf.distribute`` (a mirrored variable would be forced equal on all of them).
        """
        if self.errors is not None:
            return
        self.errors = [
            tf.Variable(
                tf.zeros(v.shape, tf.float32),
                trainable=False,
                name="ecq_error",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.NONE,
            )
            for v in variables
        ]
        sizes = [int(math.prod(v.shape)) for v in variables]
        self.bytes_per_step = sum(payload_bytes(n, self.config) for n in sizes)
        self.float_bytes_per_step = sum(payload_bytes(n, None) for n in sizes)

    def exchange(self, grads: Sequence[tf.Tensor], gather: Gather) -> list[tf.Tensor]:
        """Quantizes ``grads`` with error feedback; returns the workers' mean (or sum).

        Args:
            grads: This worker's gradients, one per variable given to :meth:`build`.
            gather: The all-gather of the backend in use.
        """
        if self.errors is None or len(self.errors) != len(grads):
            raise errors.InvalidArgumentError(
                "grads",
                f"{len(grads)} gradients",
                f"{0 if self.errors is None else len(self.errors)}, one per variable built",
            )
        cfg = self.config
        out = []
        for grad, err in zip(grads, self.errors, strict=True):
            grad32 = tf.cast(tf.convert_to_tensor(grad), tf.float32)
            compensated = grad32 + cfg.alpha * err
            words, scales, sent = quantize(compensated, cfg)
            err.assign(cfg.beta * err + (grad32 - sent))
            n = int(math.prod(grad.shape))
            all_words = gather(words[None, :])  # (workers, words)
            all_scales = gather(scales[None, :])  # (workers, buckets)
            decoded = [
                dequantize(all_words[w], all_scales[w], n, cfg) for w in range(self.num_workers)
            ]
            total = tf.add_n(decoded)
            if self.average:
                total = total / float(self.num_workers)
            out.append(tf.cast(tf.reshape(total, grad.shape), grad.dtype))
        return out


def with_aggregation(
    optimizer: keras.optimizers.Optimizer,
    aggregate: Callable[[list[tf.Tensor], list[tf.Variable]], list[tf.Tensor]],
    prefix: str,
) -> keras.optimizers.Optimizer:
    """A copy of ``optimizer`` whose gradient aggregation step is ``aggregate``.

    Keras 2's optimiser calls ``aggregate_gradients`` with the local gradients before it
    applies them (under ``tf.distribute`` that is where the all-reduce happens); the copy
    is of a subclass that replaces this one step, so learning-rate schedules, weight decay
    and slot variables behave exactly as in the original class.

    Args:
        optimizer: A Keras 2 optimiser (not yet used).
        aggregate: ``(local gradients, variables) -> gradients to apply``, the same on
            every worker.
        prefix: Prepended to the class name (shows in logs and records).

    Example:
        >>> opt = with_aggregation(keras.optimizers.SGD(0.1), lambda g, v: g, "Mean")
        >>> type(opt).__name__, isinstance(opt, keras.optimizers.SGD)
        ('MeanSGD', True)
    """
    base = type(optimizer)

    def aggregate_gradients(self, grads_and_vars):
        grads_and_vars = list(grads_and_vars)
        variables = [v for _, v in grads_and_vars]
        new = aggregate([g for g, _ in grads_and_vars], variables)
        return list(zip(new, variables, strict=True))

    cls = type(f"{prefix}{base.__name__}", (base,), {"aggregate_gradients": aggregate_gradients})
    return cls.from_config(optimizer.get_config())


def wrap_optimizer(
    optimizer: keras.optimizers.Optimizer, codec: GradientCodec, gather: Gather
) -> keras.optimizers.Optimizer:
    """A copy of ``optimizer`` that exchanges gradients through ``codec``.

    Args:
        optimizer: A Keras 2 optimiser (not yet used).
        codec: The exchange state.
        gather: The backend's all-gather.

    Example:
        >>> codec = GradientCodec(ECQConfig(), num_workers=1)
        >>> opt = wrap_optimizer(keras.optimizers.SGD(0.1), codec, lambda t: t)
        >>> type(opt).__name__, isinstance(opt, keras.optimizers.SGD)
        ('ECQSGD', True)
    """

    def aggregate(grads, variables):
        with tf.init_scope():  # accumulators are created once, outside the step function
            codec.build(variables)
        return codec.exchange(grads, gather)

    wrapped = with_aggregation(optimizer, aggregate, "ECQ")
    wrapped.ecq_codec = codec
    return wrapped


__all__ = [
    "ECQConfig",
    "GradientCodec",
    "dequantize",
    "payload_bytes",
    "quantize",
    "with_aggregation",
    "wrap_optimizer",
]
