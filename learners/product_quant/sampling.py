"""In-domain input activations of a layer, from the network quantized so far and the original.

For a layer ``L``, the same calibration images go through two networks: the *current* one
(every layer below ``L`` already quantized, so that errors compound as they will at
inference) and the uncompressed one. Their inputs to ``L`` are turned into im2col rows at the
same randomly chosen output positions, in the column order of :mod:`.pq`, so that
``rows @ kernel_to_columns(kernel)`` is the layer's (pre-bias) output there.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> inp = keras.Input((6, 6, 2))
    >>> m = keras.Model(inp, keras.layers.Conv2D(3, 3, name="c")(inp))
    >>> x = np.random.default_rng(0).random((4, 6, 6, 2)).astype("float32")
    >>> xs, xt = sample_layer_inputs(m, m, "c", x, points=5)
    >>> xs.shape, np.array_equal(xs, xt)
    ((20, 18), True)
"""

from __future__ import annotations

import numpy as np

from pocketflow_tf import calibration
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.product_quant import pq


def calibration_images(x: np.ndarray | tf.data.Dataset | None, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` training images (shuffled arrays, or the first batches of a dataset).

    Example:
        >>> calibration_images(np.zeros((10, 2, 2, 1)), 4, 0).shape
        (4, 2, 2, 1)
    """
    return calibration.sample(x, n=n, seed=seed, purpose="PQ samples activations")[0]


def _rows(layer: keras.layers.Layer, x: np.ndarray) -> np.ndarray:
    """``(N, positions, D)`` im2col rows of ``x`` as ``layer`` reads them (column order)."""
    kernel_shape = tuple(int(s) for s in layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return x.reshape(x.shape[0], -1, x.shape[-1])
    kh, kw = layer.kernel_size
    patches = tf.image.extract_patches(
        x,
        sizes=[1, kh, kw, 1],
        strides=[1, *layer.strides, 1],
        rates=[1, *layer.dilation_rate, 1],
        padding=layer.padding.upper(),
    ).numpy()
    n, ho, wo, depth = patches.shape
    cols = pq.patches_to_columns(patches.reshape(-1, depth), kernel_shape)
    return cols.reshape(n, ho * wo, -1)


def sample_layer_inputs(
    current: keras.Model,
    original: keras.Model,
    name: str,
    images: np.ndarray,
    points: int = 8,
    seed: int = 0,
    batch_size: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """Input rows of layer ``name`` in ``current`` and in ``original``, at the same positions.

    Args:
        current: The network quantized so far.
        original: The uncompressed network (same layer names).
        name: A Conv2D or Dense layer.
        images: Calibration images from the training split.
        points: Output positions sampled per image (all of them when fewer).
        seed: Sampling seed.
        batch_size: Images per forward pass.

    Returns:
        ``(x_current, x_original)``, both ``(images * points, D)`` float32.

    Example:
        Here the network "quantized so far" has a zeroed first layer, so the inputs of ``b``
        differ from the original's; ``b`` has 2x2 output positions, all taken:

        >>> inp = keras.Input((6, 6, 2))
        >>> h = keras.layers.Conv2D(3, 3, name="a")(inp)
        >>> m = keras.Model(inp, keras.layers.Conv2D(2, 3, name="b")(h))
        >>> cur = keras.models.clone_model(m)
        >>> cur.set_weights([np.zeros_like(w) for w in m.get_weights()])
        >>> x = np.random.default_rng(0).random((4, 6, 6, 2)).astype("float32")
        >>> xs, xt = sample_layer_inputs(cur, m, "b", x, points=100)
        >>> xs.shape, xt.shape, float(np.abs(xs).max()), bool(np.abs(xt).max() > 0)
        ((16, 27), (16, 27), 0.0, True)
    """
    rng = np.random.default_rng(seed)
    layer = current.get_layer(name)
    cur = keras.Model(current.inputs, layer.input)
    org = keras.Model(original.inputs, original.get_layer(name).input)
    xs, xt = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        rc = _rows(layer, np.asarray(cur(batch, training=False)))
        ro = _rows(layer, np.asarray(org(batch, training=False)))
        n, positions, _ = rc.shape
        k = min(points, positions)
        idx = np.argsort(rng.random((n, positions)), axis=1)[:, :k]  # k distinct per image
        rows = np.arange(n)[:, None]
        xs.append(rc[rows, idx].reshape(n * k, -1))
        xt.append(ro[rows, idx].reshape(n * k, -1))
    return np.concatenate(xs).astype(np.float32), np.concatenate(xt).astype(np.float32)
