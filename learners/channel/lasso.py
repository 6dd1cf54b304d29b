"""Channel selection by LASSO regression and kernel refit by least squares (He et al. 2017).

For a group of channels, every layer that reads it (a *consumer*: Conv2D or Dense) is
sampled at random output positions of calibration images: its input patches come from the
model pruned so far (so errors of earlier layers are seen and corrected) and its target
output from the original model (pre-activation, restricted to the output channels still
kept). The output splits into per-channel contributions ``Z_c = X_c W_c``; LASSO finds
coefficients ``beta`` with ``sum_c beta_c Z_c ~ Y`` and an L1 weight, found by bisection,
that leaves exactly the requested number of channels. The kept kernel is then refitted by
least squares on the same samples. With several consumers (a residual group is read by every
block of its stage), their normalised systems are summed.

The LASSO is solved on the ``C x C`` normal equations rather than on millions of rows: with
``G = Z'Z = L L'`` (Cholesky), ``||y - Z b||^2 = ||L^-1 Z'y - L' b||^2 + const``, so
scikit-learn's coordinate descent runs on a square system of the group's size.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> patches = rng.normal(size=(500, 1, 4)).astype("float32")
    >>> kernel = np.ones((1, 4, 2), "float32")
    >>> kernel[:, 1] = 0.01  # channel 1 hardly contributes
    >>> s = ConsumerSample("fc", patches, patches.reshape(500, 4) @ kernel[0], kernel, None, (1, 4))
    >>> select_channels([s], [np.arange(4)], 3).tolist()
    [0, 2, 3]
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from pocketflow_tf import surgery
from pocketflow_tf.compat import keras, tf


@dataclasses.dataclass
class ConsumerSample:
    """Sampled inputs and targets of one consumer layer.

    Attributes:
        name: Layer name.
        patches: ``(n, P, C)`` input patches from the pruned-so-far model (``P`` = kernel
            positions, or flattened spatial positions for ``Flatten -> Dense``).
        target: ``(n, O)`` original pre-activation output on the kept output channels.
        kernel: ``(P, C, O)`` the layer's current kernel.
        bias: ``(O,)`` current bias, or ``None``.
        kernel_shape: The layer's kernel shape, to reshape a refitted kernel into.

    Example:
        >>> ConsumerSample("c", np.zeros((2, 9, 4)), np.zeros((2, 3)), np.zeros((9, 4, 3)),
        ...                None, (3, 3, 4, 3)).patches.shape
        (2, 9, 4)
    """

    name: str
    patches: np.ndarray
    target: np.ndarray
    kernel: np.ndarray
    bias: np.ndarray | None
    kernel_shape: tuple[int, ...]


def supports(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` can be a LASSO consumer (Conv2D without groups/dilation, Dense).

    Example:
        >>> supports(keras.layers.Dense(2)), supports(keras.layers.SeparableConv2D(2, 3))
        (True, False)
    """
    cls = type(layer).__name__
    if cls == "Dense":
        return True
    return cls == "Conv2D" and layer.groups == 1


def _patches(layer: keras.layers.Layer, x: np.ndarray, flat_repeat: int) -> np.ndarray:
    """``(N, positions, P, C)`` patches of ``x`` as ``layer`` reads them."""
    if type(layer).__name__ == "Dense":
        c = x.shape[-1]
        if flat_repeat > 1:  # Dense after Flatten: the "kernel positions" are the pixels
            return x.reshape(x.shape[0], 1, flat_repeat, c // flat_repeat)
        return x.reshape(x.shape[0], -1, 1, c)
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    dh, dw = layer.dilation_rate
    p = tf.image.extract_patches(
        x,
        sizes=[1, kh, kw, 1],
        strides=[1, sh, sw, 1],
        rates=[1, dh, dw, 1],
        padding=layer.padding.upper(),
    ).numpy()
    n, ho, wo, _ = p.shape
    return p.reshape(n, ho * wo, kh * kw, x.shape[-1])


def flat_repeat(graph, layer_name: str) -> int:
    """How often a ``Flatten`` repeats each channel in ``layer_name``'s input (1 otherwise).

    Example:
        >>> from pocketflow_tf import channel_graph
        >>> m = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Conv2D(4, 1, name="c"),
        ...                       keras.layers.Flatten(), keras.layers.Dense(2, name="d")])
        >>> flat_repeat(channel_graph.build(m), "d")
        4
    """
    segs = graph.layers[layer_name].inputs[0]
    return segs[0].repeat if len(segs) == 1 else 1


def _kernel3(layer: keras.layers.Layer, kernel: np.ndarray, flat_repeat: int) -> np.ndarray:
    if type(layer).__name__ == "Dense" and flat_repeat > 1:
        return kernel.reshape(flat_repeat, kernel.shape[0] // flat_repeat, kernel.shape[1])
    return kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])


def consumer_in_mask(graph, masks, layer_name: str) -> np.ndarray:
    """Which input channels of ``layer_name``'s kernel (its ``C`` axis) ``masks`` keep.

    Example:
        >>> from pocketflow_tf import channel_graph
        >>> m = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Conv2D(4, 1, name="c"),
        ...                       keras.layers.Flatten(), keras.layers.Dense(2, name="d")])
        >>> g = channel_graph.build(m)
        >>> gid = g.prunable_groups()[0].id
        >>> consumer_in_mask(g, {gid: np.array([True, False, True, True])}, "d").tolist()
        [True, False, True, True]
    """
    in_mask = surgery.segment_mask(graph, masks, graph.layers[layer_name].inputs[0])
    repeat = flat_repeat(graph, layer_name)
    if repeat > 1:  # Flatten -> Dense: the mask repeats once per pixel
        in_mask = in_mask[: len(in_mask) // repeat]
    return in_mask


def sample_index(rng: np.random.Generator, images: int, positions: int, points: int):
    """Index picking ``min(points, positions)`` distinct positions of each image's patches.

    ``patches[index]`` of ``(images, positions, P, C)`` patches is
    ``(images, min(points, positions), P, C)``.

    Example:
        >>> p = np.zeros((3, 10, 9, 4))
        >>> p[sample_index(np.random.default_rng(0), 3, 10, 4)].shape
        (3, 4, 9, 4)
    """
    k = min(points, positions)
    idx = np.stack([rng.choice(positions, k, replace=False) for _ in range(images)])
    return np.arange(images)[:, None], idx


def ridge_solve(gram: np.ndarray, rhs: np.ndarray, ridge: float) -> np.ndarray:
    """Solves ``(G + ridge * mean(diag G) * I) w = rhs``: least squares from normal equations.

    The ridge is relative to the data scale: it stabilises the solve when kept channels are
    collinear without biasing the fit visibly.

    Example:
        >>> ridge_solve(np.eye(2) * 4.0, np.array([4.0, 8.0]), 0.0).tolist()
        [1.0, 2.0]
    """
    gram = gram + np.eye(len(gram)) * ridge * np.trace(gram) / max(len(gram), 1)
    return np.linalg.solve(gram, rhs)


def sample_consumers(
    current: keras.Model,
    original: keras.Model,
    names: Sequence[str],
    images: np.ndarray,
    out_columns: dict[str, np.ndarray],
    flat_repeat: dict[str, int],
    points_per_image: int = 10,
    seed: int = 0,
    batch_size: int = 128,
) -> list[ConsumerSample]:
    """Samples inputs (pruned model) and targets (original model) of each consumer.

    Args:
        current: The model pruned so far.
        original: The uncompressed model (same layer names).
        names: Consumer layer names.
        images: Calibration images from the training split.
        out_columns: Per consumer, the original output channels still kept.
        flat_repeat: Per consumer, the ``Flatten`` repeat of its input (1 otherwise).
        points_per_image: Output positions sampled per image.
        seed: Sampling seed.
        batch_size: Images per forward pass.

    Example:
        >>> keras.utils.set_random_seed(0)
        >>> m = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, name="a"),
        ...                       keras.layers.Conv2D(3, 3, name="b")])
        >>> x = np.random.default_rng(0).random((5, 6, 6, 2)).astype("float32")
        >>> [s] = sample_consumers(m, m, ["b"], x, {"b": np.array([0, 2])}, {"b": 1},
        ...                        points_per_image=4)
        >>> s.patches.shape, s.target.shape, s.kernel.shape  # 5 images x 4 points
        ((20, 9, 4), (20, 2), (9, 4, 2))

        Unpruned (``current`` is ``original``), the target is the layer's own output:

        >>> y = s.patches.reshape(20, -1) @ s.kernel.reshape(36, 2) + s.bias
        >>> bool(np.allclose(y, s.target, atol=1e-5))
        True
    """
    rng = np.random.default_rng(seed)
    cur_ex = keras.Model(current.inputs, [current.get_layer(n).input for n in names])
    org_ex = keras.Model(original.inputs, [original.get_layer(n).input for n in names])
    acc: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        xc = cur_ex(batch, training=False)
        xo = org_ex(batch, training=False)
        if len(names) == 1:
            xc, xo = [xc], [xo]
        for n, a, b in zip(names, xc, xo, strict=True):
            layer = current.get_layer(n)
            pc = _patches(layer, np.asarray(a), flat_repeat[n])
            po = _patches(layer, np.asarray(b), flat_repeat[n])
            sel = sample_index(rng, len(batch), pc.shape[1], points_per_image)
            acc[n][0].append(pc[sel].reshape(-1, pc.shape[2], pc.shape[3]))
            acc[n][1].append(po[sel].reshape(-1, po.shape[2], po.shape[3]))
    samples = []
    for n in names:
        cur_layer, org_layer = current.get_layer(n), original.get_layer(n)
        pc, po = np.concatenate(acc[n][0]), np.concatenate(acc[n][1])
        w_org = org_layer.get_weights()
        k_org = _kernel3(org_layer, w_org[0], flat_repeat[n])
        y = po.reshape(len(po), -1) @ k_org.reshape(-1, k_org.shape[-1])
        if org_layer.use_bias:
            y = y + w_org[1]
        w_cur = cur_layer.get_weights()
        cols = out_columns[n]
        samples.append(
            ConsumerSample(
                n,
                pc.astype(np.float32),
                y[:, cols].astype(np.float32),
                _kernel3(cur_layer, w_cur[0], flat_repeat[n])[:, :, cols],
                w_cur[1][cols] if cur_layer.use_bias else None,
                tuple(w_cur[0].shape),
            )
        )
    return samples


def _normal_equations(samples, positions):
    """Sums ``Z'Z`` and ``Z'r`` of every consumer, each normalised by its target energy.

    ``Z_c = X_c K_c`` is never materialised (it has ``n * C * O`` entries): with the patch
    covariance ``A = X'X`` and ``B = K K'`` over (position, channel) pairs,
    ``(Z'Z)_cd = sum_pq A[pc, qd] B[pc, qd]``, which is two matrix products.
    """
    size = len(positions[0])
    gram = np.zeros((size, size))
    zy = np.zeros(size)
    for s, pos in zip(samples, positions, strict=True):
        n, p, c = s.patches.shape
        rest = np.setdiff1d(np.arange(c), pos)
        xg = s.patches[:, :, pos].reshape(n, p * size).astype(np.float64)
        kg = s.kernel[:, pos, :].reshape(p * size, -1).astype(np.float64)
        fixed = s.patches[:, :, rest].reshape(n, -1) @ s.kernel[:, rest, :].reshape(-1, kg.shape[1])
        if s.bias is not None:
            fixed = fixed + s.bias
        r = s.target.astype(np.float64) - fixed
        g = ((xg.T @ xg) * (kg @ kg.T)).reshape(p, size, p, size).sum(axis=(0, 2))
        b = ((xg.T @ r) * kg).reshape(p, size, -1).sum(axis=(0, 2))
        scale = 1.0 / max(float(np.sum(r**2)), 1e-12)
        gram += g * scale
        zy += b * scale
    return gram, zy


def select_channels(
    samples: Sequence[ConsumerSample], positions: Sequence[np.ndarray], keep: int
) -> np.ndarray:
    """Indices (within the group, ascending) of the ``keep`` channels LASSO retains.

    Args:
        samples: One per consumer.
        positions: Per consumer, where the group's channels sit in its input channels.
        keep: How many channels to keep.

    Example:
        Channel 3 hardly matters to ``fa`` but is all that matters to ``fb``; with both
        consumers reading the group it is kept over channel 2:

        >>> p = np.random.default_rng(0).normal(size=(400, 1, 4)).astype("float32")
        >>> ka = np.array([[[1.0], [1.0], [0.1], [0.05]]], "float32")
        >>> kb = np.array([[[0.05], [0.05], [0.05], [1.0]]], "float32")
        >>> fa = ConsumerSample("fa", p, p.reshape(400, 4) @ ka[0], ka, None, (4, 1))
        >>> fb = ConsumerSample("fb", p, p.reshape(400, 4) @ kb[0], kb, None, (4, 1))
        >>> select_channels([fa], [np.arange(4)], 3).tolist()
        [0, 1, 2]
        >>> select_channels([fa, fb], [np.arange(4)] * 2, 3).tolist()
        [0, 1, 3]
    """
    size = len(positions[0])
    if keep >= size:
        return np.arange(size)
    gram, zy = _normal_equations(samples, positions)
    # A whisker of ridge keeps the Cholesky factor defined when two channels are collinear.
    gram = gram + np.eye(size) * (1e-8 * np.trace(gram) / size + 1e-12)
    chol = np.linalg.cholesky(gram)
    x_sq = chol.T
    y_sq = np.linalg.solve(chol, zy)
    alpha_hi = max(float(np.max(zy)) / size, 1e-12)
    lasso = Lasso(alpha=alpha_hi, fit_intercept=False, positive=True, max_iter=5000, tol=1e-6)

    def solve(alpha):
        lasso.set_params(alpha=alpha)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lasso.fit(x_sq, y_sq)
        return lasso.coef_.copy()

    lo, hi = alpha_hi * 1e-6, alpha_hi
    beta_lo = solve(lo)
    if np.count_nonzero(beta_lo) < keep:
        # Even a tiny L1 weight zeroes channels: rank the remaining ones by least squares.
        beta_lo = np.linalg.lstsq(x_sq, y_sq, rcond=None)[0] + beta_lo
    else:
        for _ in range(40):
            mid = np.sqrt(lo * hi)
            beta = solve(mid)
            nnz = np.count_nonzero(beta)
            if nnz >= keep:
                lo, beta_lo = mid, beta
                if nnz == keep:
                    break
            else:
                hi = mid
    order = np.argsort(-beta_lo, kind="stable")
    return np.sort(order[:keep])


def refit(
    sample: ConsumerSample, keep_positions: np.ndarray, ridge: float = 1e-4
) -> tuple[np.ndarray, np.ndarray | None]:
    """Least-squares kernel (and bias) on the kept input channels of one consumer.

    Returns:
        ``(kernel, bias)``: the kernel as ``(P, len(keep_positions), O)`` and the bias
        (``None`` when the layer has none).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> p = rng.normal(size=(200, 1, 3))
        >>> s = ConsumerSample("fc", p, p[:, 0, :2] @ np.ones((2, 1)), np.ones((1, 3, 1)), None, (3, 1))
        >>> np.round(refit(s, np.array([0, 1]))[0].ravel(), 2).tolist()
        [1.0, 1.0]
    """
    p = sample.patches[:, :, keep_positions]
    n, positions, kept = p.shape
    a = p.reshape(n, -1).astype(np.float64)
    if sample.bias is not None:
        a = np.concatenate([a, np.ones((n, 1))], axis=1)
    w = ridge_solve(a.T @ a, a.T @ sample.target.astype(np.float64), ridge)
    bias = None
    if sample.bias is not None:
        w, bias = w[:-1], w[-1].astype(np.float32)
    return w.reshape(positions, kept, -1).astype(np.float32), bias
