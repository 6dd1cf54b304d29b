"""Codebook maths of product quantization: sub-vector layout and activation-weighted EM.

Layout. A kernel is viewed as a matrix ``V`` of shape ``(D, O)``: one column per output
channel, ``D = c_in * kh * kw`` rows ordered *(input channel, kernel row, kernel column)*, so
that the ``kh * kw`` spatial taps of one input channel are consecutive. A ``Dense`` kernel
``(c_in, O)`` already is that matrix. Each column is cut into ``m = D / d`` blocks of ``d``
consecutive rows; block ``j`` of column ``o`` is one *sub-vector*, so a layer has ``m * O``
sub-vectors, stored as an array ``(m, O, d)``. With ``d = kh * kw`` a sub-vector is the spatial
kernel of one (input, output) channel pair (Stock et al.'s choice for 3x3 convolutions,
``d = 9``); for 1x1 convolutions and Dense layers it is ``d`` consecutive input channels.

Objective. For inputs ``X`` (im2col rows in the same row order) the layer computes ``X V``.
Product quantization replaces every sub-vector by one of ``k`` shared codewords and, following
"And the Bit Goes Down" (Stock et al., ICLR 2020), minimises the error of the *outputs*
rather than of the weights. Restricted to the diagonal blocks of the input Gram matrix
(``G_j = X_j' X_j / n`` for the columns of block ``j``) the error separates over sub-vectors:

    sum_j sum_o (v_jo - c[a_jo])' G_j (v_jo - c[a_jo])

which :func:`em` minimises by alternating

* E-step: every sub-vector takes the codeword of smallest ``G_j``-weighted distance
  (exhaustive search over the ``k`` codewords);
* M-step: every codeword solves its weighted least squares
  ``(sum_{(j,o) in I_c} G_j) c = sum_{(j,o) in I_c} G_j v_jo``; with ``G_j = I`` this is the
  mean of its sub-vectors, i.e. plain k-means.

Empty clusters are re-seeded by splitting the most populated cluster (its codeword plus and
minus a small perturbation), as the authors' code does. The cross-block terms ``G_jl`` are
left out (they would couple every sub-vector of a column); callers measure the true output
error with :func:`output_error`.

scikit-learn's ``KMeans`` does plain k-means but accepts neither a per-sample metric nor
per-block Gram matrices, so the weighted EM is written here with NumPy (batched BLAS).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> kernel = rng.normal(size=(3, 3, 4, 8))
    >>> sub = to_subvectors(kernel, 9)
    >>> sub.shape  # 4 blocks (one per input channel) x 8 outputs, d = 9
    (4, 8, 9)
    >>> np.array_equal(from_subvectors(sub, kernel.shape), kernel)
    True
    >>> res = em(sub, k=32, n_iter=5)  # 32 sub-vectors, 32 codewords: exact
    >>> np.allclose(from_subvectors(res.codebook[res.codes], kernel.shape), kernel)
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

#: Ridge added to every block Gram matrix, relative to their mean diagonal: keeps the M-step
#: solvable when a block's inputs are degenerate (e.g. a channel a ReLU never lets through).
RIDGE = 1e-4
#: Relative size of the perturbation that splits a populated cluster into an empty one.
SPLIT_EPS = 1e-2
#: Sub-vectors x codewords evaluated at once in the E-step (bounds its memory).
_CHUNK = 1 << 22


def kernel_to_columns(kernel: np.ndarray) -> np.ndarray:
    """The ``(D, O)`` matrix of a Conv2D ``(kh, kw, c_in, O)`` or Dense ``(c_in, O)`` kernel.

    Rows are ordered (input channel, kernel row, kernel column).

    Example:
        >>> k = np.arange(2 * 2 * 3 * 1).reshape(2, 2, 3, 1)
        >>> kernel_to_columns(k)[:4, 0].tolist()  # the 4 spatial taps of input channel 0
        [0, 3, 6, 9]
    """
    kernel = np.asarray(kernel)
    if kernel.ndim == 2:
        return kernel
    kh, kw, cin, cout = kernel.shape
    return kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout)


def columns_to_kernel(columns: np.ndarray, kernel_shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`kernel_to_columns`.

    Example:
        >>> k = np.random.default_rng(0).normal(size=(3, 3, 2, 4))
        >>> np.array_equal(columns_to_kernel(kernel_to_columns(k), k.shape), k)
        True
    """
    kernel_shape = tuple(int(s) for s in kernel_shape)
    if len(kernel_shape) == 2:
        return np.asarray(columns).reshape(kernel_shape)
    kh, kw, cin, cout = kernel_shape
    return np.asarray(columns).reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)


def columns_to_subvectors(columns: np.ndarray, d: int) -> np.ndarray:
    """``(D, O)`` columns -> ``(D / d, O, d)`` sub-vectors (block, output, element).

    Example:
        >>> columns_to_subvectors(np.arange(8).reshape(4, 2), 2)[:, 0].tolist()
        [[0, 2], [4, 6]]
    """
    rows, cout = columns.shape
    if rows % d:
        raise ValueError(f"block size {d} does not divide the kernel's {rows} rows")
    return columns.reshape(rows // d, d, cout).transpose(0, 2, 1)


def subvectors_to_columns(sub: np.ndarray) -> np.ndarray:
    """Inverse of :func:`columns_to_subvectors`.

    Example:
        >>> c = np.arange(8).reshape(4, 2)
        >>> np.array_equal(subvectors_to_columns(columns_to_subvectors(c, 2)), c)
        True
    """
    m, cout, d = sub.shape
    return sub.transpose(0, 2, 1).reshape(m * d, cout)


def to_subvectors(kernel: np.ndarray, d: int) -> np.ndarray:
    """Sub-vectors ``(m, O, d)`` of a Conv2D or Dense kernel (see the module layout).

    Example:
        >>> to_subvectors(np.zeros((3, 3, 16, 32)), 9).shape
        (16, 32, 9)
    """
    return columns_to_subvectors(kernel_to_columns(kernel), d)


def from_subvectors(sub: np.ndarray, kernel_shape: Sequence[int]) -> np.ndarray:
    """The kernel of shape ``kernel_shape`` whose sub-vectors are ``sub``.

    Example:
        >>> from_subvectors(np.zeros((16, 32, 9)), (3, 3, 16, 32)).shape
        (3, 3, 16, 32)
    """
    return columns_to_kernel(subvectors_to_columns(sub), kernel_shape)


def decode(codebook: np.ndarray, codes: np.ndarray, kernel_shape: Sequence[int]) -> np.ndarray:
    """The kernel ``codebook[codes]`` rearranged to ``kernel_shape``.

    Example:
        >>> cb = np.array([[0.0, 1.0], [2.0, 3.0]])
        >>> decode(cb, np.array([[0, 1]]), (2, 2)).tolist()
        [[0.0, 2.0], [1.0, 3.0]]
    """
    return from_subvectors(np.asarray(codebook)[np.asarray(codes)], kernel_shape)


def patches_to_columns(patches: np.ndarray, kernel_shape: Sequence[int]) -> np.ndarray:
    """Reorders im2col rows from ``tf.image.extract_patches`` order to the column order.

    ``extract_patches`` orders a patch (kernel row, kernel column, channel), the columns
    (channel, kernel row, kernel column); after this, ``rows @ kernel_to_columns(kernel)`` is
    the convolution output at those positions.

    Example:
        >>> p = np.arange(2 * 2 * 3).reshape(1, 12)  # one 2x2 patch of 3 channels
        >>> patches_to_columns(p, (2, 2, 3, 1))[0, :4].tolist()  # channel 0's taps
        [0, 3, 6, 9]
    """
    if len(kernel_shape) == 2:
        return patches
    kh, kw, cin, _ = kernel_shape
    n = patches.shape[0]
    return patches.reshape(n, kh, kw, cin).transpose(0, 3, 1, 2).reshape(n, cin * kh * kw)


def block_grams(x: np.ndarray, d: int) -> np.ndarray:
    """Per-block Gram matrices ``G_j = X_j' X_j / n`` of inputs ``x`` (``(n, D)``), float64.

    Example:
        >>> x = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 2.0]])
        >>> block_grams(x, 2).tolist()
        [[[0.5, 0.0], [0.0, 0.5]], [[2.0, 0.0], [0.0, 2.0]]]
    """
    n, rows = x.shape
    xb = np.asarray(x, dtype=np.float64).reshape(n, rows // d, d).transpose(1, 0, 2)
    return np.matmul(xb.transpose(0, 2, 1), xb) / max(n, 1)


def output_error(x: np.ndarray, target: np.ndarray, columns: np.ndarray) -> float:
    """Relative output error ``||target - x @ columns||^2 / ||target||^2``.

    Example:
        >>> x = np.eye(2)
        >>> output_error(x, np.ones((2, 1)), np.zeros((2, 1)))
        1.0
    """
    x = np.asarray(x, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    denom = float(np.sum(target**2)) or 1.0
    return float(np.sum((target - x @ np.asarray(columns, dtype=np.float64)) ** 2) / denom)


def correct_drift(x_student: np.ndarray, x_teacher: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Columns that map the student's inputs closest to the teacher's outputs.

    Layers below have already been quantized, so this layer's inputs ``x_student`` differ
    from the uncompressed network's ``x_teacher``. Ridge least squares, pulled towards the
    original ``columns`` (not towards zero, so directions the samples do not see stay put):
    ``W = V + (Xs'Xs + lam I)^-1 Xs'(Xt - Xs) V``, the minimiser of
    ``||Xt V - Xs W||^2 + lam ||W - V||^2``. Quantizing these columns under the student's
    input metric then targets the teacher's outputs. The result is exactly ``columns`` when
    both inputs agree.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> xs = rng.normal(size=(200, 3))
        >>> v = rng.normal(size=(3, 2))
        >>> np.allclose(correct_drift(xs, xs, v), v)
        True
        >>> w = correct_drift(xs, 2 * xs, v)  # inputs halved: the refit doubles the weights
        >>> np.allclose(w, 2 * v, atol=1e-3)
        True
    """
    xs = np.asarray(x_student, dtype=np.float64)
    diff = np.asarray(x_teacher, dtype=np.float64) - xs
    v = np.asarray(columns, dtype=np.float64)
    if not np.any(diff):
        return v.copy()
    gram = xs.T @ xs
    lam = RIDGE * max(float(np.trace(gram)) / len(gram), 1e-12)
    rhs = xs.T @ (diff @ v)
    return v + np.linalg.solve(gram + lam * np.eye(len(gram)), rhs)


@dataclasses.dataclass
class EMResult:
    """Outcome of :func:`em`.

    Attributes:
        codebook: ``(k, d)`` codewords (float64).
        codes: ``(m, O)`` index of each sub-vector's codeword.
        objective: Weighted reconstruction error (the EM objective, summed over sub-vectors)
            after the initial assignment and after every iteration.
        init_codebook: The initial codewords (sampled sub-vectors).
        init_codes: Their assignment, before any M-step.
        iterations: EM iterations run (fewer than asked when assignments stopped changing).
        empty_resolved: Empty clusters re-seeded by splitting a populated one.
        empty_left: Clusters left empty because no cluster had two distinct members (the
            layer has fewer distinct sub-vectors than codewords).

    Example:
        >>> r = em(np.zeros((1, 4, 2)), k=2, n_iter=3)
        >>> r.codebook.shape, r.empty_left
        ((2, 2), 1)
    """

    codebook: np.ndarray
    codes: np.ndarray
    objective: list[float]
    init_codebook: np.ndarray
    init_codes: np.ndarray
    iterations: int
    empty_resolved: int
    empty_left: int


def em(
    sub: np.ndarray,
    grams: np.ndarray | None = None,
    k: int = 256,
    n_iter: int = 30,
    seed: int = 0,
    ridge: float = RIDGE,
    init: np.ndarray | None = None,
) -> EMResult:
    """Learns ``k`` codewords for sub-vectors ``sub`` under per-block metrics ``grams``.

    Args:
        sub: ``(m, O, d)`` sub-vectors (see :func:`to_subvectors`).
        grams: ``(m, d, d)`` block Gram matrices of the layer's inputs
            (:func:`block_grams`); ``None``: identity, i.e. plain k-means on the weights.
        k: Number of codewords.
        n_iter: Maximum E/M iterations (stops early when no assignment changes).
        seed: Seed of the initial codeword sampling and of cluster splitting.
        ridge: Added to every Gram, relative to their mean diagonal.
        init: ``(k, d)`` initial codewords; ``None``: ``k`` distinct sub-vectors drawn at
            random (the paper's initialisation).

    Returns:
        The :class:`EMResult`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> sub = rng.normal(size=(8, 16, 4))
        >>> r = em(sub, k=8, n_iter=10)
        >>> r.codes.shape, int(r.codes.max()) < 8, r.objective[-1] < r.objective[0]
        ((8, 16), True, True)
    """
    sub = np.asarray(sub, dtype=np.float64)
    m, cout, d = sub.shape
    if grams is None:
        metric = np.broadcast_to(np.eye(d), (m, d, d))
    else:
        grams = np.asarray(grams, dtype=np.float64)
        scale = float(np.mean(np.trace(grams, axis1=1, axis2=2))) / d
        metric = grams + ridge * max(scale, 1e-12) * np.eye(d)
    rng = np.random.default_rng(seed)
    flat = sub.reshape(-1, d)

    # Initialisation as in the paper: k distinct sub-vectors drawn at random. With fewer
    # distinct sub-vectors than k, all of them, and the spare codewords start as duplicates
    # (their clusters are empty and the split below re-seeds them where it can).
    distinct = np.unique(flat, axis=0)
    if init is not None:
        codebook = np.array(init, dtype=np.float64, copy=True)
        if codebook.shape != (k, d):
            raise ValueError(f"init has shape {codebook.shape}, expected {(k, d)}")
    elif len(distinct) <= k:
        pad = np.repeat(distinct[:1], k - len(distinct), axis=0)
        codebook = np.concatenate([distinct, pad])
    else:
        codebook = distinct[rng.choice(len(distinct), k, replace=False)].copy()
    codes = assign(sub, metric, codebook)
    resolved, left = _resolve_empty(sub, metric, codebook, codes, rng)
    init_codebook, init_codes = codebook.copy(), codes.copy()
    objective = [weighted_error(sub, metric, codebook, codes)]
    iterations = 0
    for _ in range(n_iter):
        iterations += 1
        codebook = m_step(sub, metric, codes, codebook)
        new = assign(sub, metric, codebook)
        r, left = _resolve_empty(sub, metric, codebook, new, rng)
        resolved += r
        changed = not np.array_equal(new, codes)
        codes = new
        objective.append(weighted_error(sub, metric, codebook, codes))
        if not changed:
            break
    # Codewords optimal for the final assignment (a no-op after convergence).
    codebook = m_step(sub, metric, codes, codebook)
    objective[-1] = weighted_error(sub, metric, codebook, codes)
    return EMResult(
        codebook, codes, objective, init_codebook, init_codes, iterations, resolved, left
    )


def assign(sub: np.ndarray, metric: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """E-step: each sub-vector's codeword of least ``metric``-weighted distance (exhaustive).

    ``(v - c)' G (v - c) = c'Gc - 2 v'Gc + const``: one batched product per block of
    sub-vectors, chunked so that memory stays bounded on large layers.

    Example:
        >>> sub = np.array([[[0.0, 0.1], [1.0, 0.9]]])
        >>> assign(sub, np.eye(2)[None], np.array([[1.0, 1.0], [0.0, 0.0]])).tolist()
        [[1, 0]]
    """
    m, cout, d = sub.shape
    k = len(codebook)
    cg = np.matmul(codebook[None], metric)  # (m, k, d): G_j c for every codeword
    cgc = np.einsum("mkd,kd->mk", cg, codebook)
    codes = np.empty((m, cout), dtype=np.int64)
    step = max(1, _CHUNK // max(cout * k, 1))
    for s in range(0, m, step):
        cross = np.matmul(sub[s : s + step], cg[s : s + step].transpose(0, 2, 1))
        codes[s : s + step] = np.argmin(cgc[s : s + step, None, :] - 2.0 * cross, axis=-1)
    return codes


def m_step(
    sub: np.ndarray, metric: np.ndarray, codes: np.ndarray, codebook: np.ndarray
) -> np.ndarray:
    """M-step: each non-empty codeword's weighted least-squares solution.

    Solves ``(sum_j n_jc G_j) c = sum_j G_j s_jc`` where ``n_jc`` counts and ``s_jc`` sums the
    sub-vectors of block ``j`` assigned to ``c``. Empty codewords keep their value.

    Example:
        >>> sub = np.array([[[0.0, 0.0], [2.0, 4.0]]])
        >>> m_step(sub, np.eye(2)[None], np.array([[0, 0]]), np.zeros((2, 2))).tolist()
        [[1.0, 2.0], [0.0, 0.0]]
    """
    m, cout, d = sub.shape
    k = len(codebook)
    idx = (np.arange(m)[:, None] * k + codes).ravel()
    counts = np.bincount(idx, minlength=m * k).reshape(m, k).astype(np.float64)
    flat = sub.reshape(-1, d)
    sums = np.stack(
        [np.bincount(idx, weights=flat[:, t], minlength=m * k) for t in range(d)], axis=-1
    ).reshape(m, k, d)
    lhs = (counts.T @ metric.reshape(m, d * d)).reshape(k, d, d)
    rhs = np.matmul(metric, sums.transpose(0, 2, 1)).sum(axis=0).T  # (k, d)
    used = counts.sum(axis=0) > 0
    out = np.array(codebook, dtype=np.float64, copy=True)
    out[used] = np.linalg.solve(lhs[used], rhs[used][..., None])[..., 0]
    return out


def weighted_error(
    sub: np.ndarray, metric: np.ndarray, codebook: np.ndarray, codes: np.ndarray
) -> float:
    """The EM objective ``sum (v - c[a])' G_j (v - c[a])`` over all sub-vectors.

    Example:
        >>> weighted_error(np.ones((1, 1, 2)), np.eye(2)[None], np.zeros((1, 2)), np.zeros((1, 1), int))
        2.0
    """
    diff = sub - codebook[codes]
    return float(np.sum(np.matmul(diff, metric) * diff))


def _pair_distance(vecs, metric_rows, c):
    diff = vecs - c
    return np.einsum("nd,nde,ne->n", diff, metric_rows, diff)


def _resolve_empty(sub, metric, codebook, codes, rng) -> tuple[int, int]:
    """Re-seeds empty clusters in place by splitting the most populated ones.

    For each empty codeword, the most populated cluster that has two distinct members is
    split: its codeword ``c`` becomes ``c - e`` and the empty one ``c + e`` (``e`` small and
    random) and that cluster's members go to the closer of the two. If a perturbation fails
    to separate them, the empty codeword takes the member farthest from ``c`` instead, which
    always wins at least itself. Returns (resolved, left empty).
    """
    m, cout, d = sub.shape
    k = len(codebook)
    flat = sub.reshape(-1, d)
    flat_codes = codes.reshape(-1)  # a view: assignments are updated in place
    counts = np.bincount(flat_codes, minlength=k)
    resolved = left = 0
    for empty in np.flatnonzero(counts == 0):
        for big in np.argsort(-counts, kind="stable"):
            if counts[big] < 2:
                left += 1
                break
            members = np.flatnonzero(flat_codes == big)
            vecs = flat[members]
            if not np.ptp(vecs, axis=0).any():
                continue  # identical members cannot be split
            rows = metric[members // cout]
            spread = float(np.std(vecs)) or 1.0
            to_new = None
            for attempt in range(3):
                e = rng.standard_normal(d) * SPLIT_EPS * spread * 10**attempt
                new_c, old_c = codebook[big] + e, codebook[big] - e
                closer = _pair_distance(vecs, rows, new_c) < _pair_distance(vecs, rows, old_c)
                if 0 < closer.sum() < len(members):
                    to_new = closer
                    break
            if to_new is None:
                far = int(np.argmax(_pair_distance(vecs, rows, codebook[big])))
                new_c, old_c = vecs[far].copy(), codebook[big].copy()
                d_old = _pair_distance(vecs, rows, old_c)
                to_new = _pair_distance(vecs, rows, new_c) < d_old
                to_new[far] = True
                if to_new.all():  # keep the member nearest the old codeword where it was
                    to_new[int(np.argmin(d_old))] = False
            codebook[empty], codebook[big] = new_c, old_c
            flat_codes[members[to_new]] = empty
            counts[empty], counts[big] = int(to_new.sum()), int((~to_new).sum())
            resolved += 1
            break
        else:
            left += 1
    return resolved, left
