"""BatchNorm statistics re-estimation on training batches (PQ's last step, the channel proxy).

Quantized kernels change the distribution each BatchNorm sees; its moving statistics, last
updated as a running average during fine-tuning (with weights that kept moving), no longer
match. This recomputes them for the final weights: the network runs in training mode (so
every BatchNorm normalises with its batch's statistics, as during training) and each
BatchNorm's moving mean and variance become the exact mean and variance of its inputs over
all the batches seen (not an exponential average). Other training-mode layers (Dropout) are
active during these passes too; only BatchNorm state is written.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras, tf
    >>> inp = keras.Input((3,))
    >>> m = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(inp))
    >>> x = np.random.default_rng(0).normal(2.0, 3.0, size=(64, 3)).astype("float32")
    >>> info = reestimate(m, tf.data.Dataset.from_tensor_slices(x).batch(16), max_batches=10)
    >>> np.allclose(m.get_layer("bn").moving_mean.numpy(), x.mean(0), atol=1e-5)
    True
    >>> info["batches"], info["layers"]
    (4, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pocketflow_tf.compat import keras, tf


def batchnorm_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Top-level BatchNormalization layers normalising the last axis.

    Example:
        >>> inp = keras.Input((2,))
        >>> m = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(inp))
        >>> [layer.name for layer in batchnorm_layers(m)]
        ['bn']
    """
    out = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        rank = len(layer.input_shape)
        if list(layer.axis) in ([rank - 1], [-1]) and len(layer._inbound_nodes) == 1:
            out.append(layer)
    return out


def reestimate(model: keras.Model, data: tf.data.Dataset, max_batches: int = 50) -> dict[str, Any]:
    """Sets every BatchNorm's moving statistics to the exact ones over ``max_batches`` batches.

    Args:
        model: The model (modified in place).
        data: Batches of images, or of ``(images, labels)``.
        max_batches: Batches to run.

    Returns:
        ``{"layers", "batches", "samples", "mean_abs_change_mean", "mean_abs_change_var"}``.

    Example:
        ``(images, labels)`` batches work too; only the first ``max_batches`` are used:

        >>> inp = keras.Input((2,))
        >>> m = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(inp))
        >>> x = np.arange(16, dtype="float32").reshape(8, 2)
        >>> data = tf.data.Dataset.from_tensor_slices((x, np.zeros(8))).batch(2)
        >>> info = reestimate(m, data, max_batches=2)
        >>> info["batches"], info["samples"], m.get_layer("bn").moving_mean.numpy().tolist()
        (2, 4, [3.0, 4.0])
    """
    bns = batchnorm_layers(model)
    if not bns or max_batches <= 0:
        return {"layers": 0, "batches": 0, "samples": 0}
    probe = keras.Model(model.inputs, [bn.input for bn in bns])
    sums = [np.zeros(bn.moving_mean.shape, np.float64) for bn in bns]
    squares = [np.zeros_like(s) for s in sums]
    counts = [0] * len(bns)  # values per channel: batch x spatial positions of each BN
    batches = samples = 0
    for batch in data.take(max_batches):
        x = batch[0] if isinstance(batch, tuple | list) else batch
        outs = probe(x, training=True)
        if len(bns) == 1:
            outs = [outs]
        for i, out in enumerate(outs):
            v = np.asarray(out, np.float64).reshape(-1, sums[i].shape[0])
            sums[i] += v.sum(axis=0)
            squares[i] += (v**2).sum(axis=0)
            counts[i] += len(v)
        samples += int(x.shape[0])
        batches += 1
    d_mean, d_var = [], []
    for bn, s, q, n in zip(bns, sums, squares, counts, strict=True):
        mean = s / n
        var = np.maximum(q / n - mean**2, 0.0)  # population variance over every position
        d_mean.append(float(np.mean(np.abs(bn.moving_mean.numpy() - mean))))
        d_var.append(float(np.mean(np.abs(bn.moving_variance.numpy() - var))))
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(var.astype(np.float32))
    return {
        "layers": len(bns),
        "batches": batches,
        "samples": samples,
        "mean_abs_change_mean": float(np.mean(d_mean)),
        "mean_abs_change_var": float(np.mean(d_var)),
    }
