"""Calibration images: a seeded subset of the training data that a compression step measures on.

Channel selection, DCP, product quantization and int8 conversion all look at a few hundred
training images (never the test set) before or instead of training. They take them here:
from arrays, a seeded random subset (user arrays may be sorted by class: the first ``n``
would show a single class); from a ``tf.data.Dataset``, its first batches (the pipeline
already shuffles, and it may be infinite).

Example:
    >>> import numpy as np
    >>> x, y = np.arange(10)[:, None], np.arange(10) % 2
    >>> xs, ys = sample(x, y, n=4, seed=0)
    >>> xs.shape, bool(np.array_equal(ys, xs[:, 0] % 2))
    ((4, 1), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pocketflow_tf import errors, options
from pocketflow_tf.compat import tf


def sample(
    x: Any,
    y: Any = None,
    *,
    n: int,
    seed: int,
    labels: bool = False,
    in_order: bool = False,
    purpose: str = "",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to ``n`` training images and, when there are labels, their labels.

    Args:
        x: Training images (an array), or a batched ``tf.data.Dataset`` of images or of
            ``(images, labels)``.
        y: Labels of an array ``x`` (``None`` with a dataset: it yields them).
        n: Most images returned (>= 1).
        seed: Seed of the subset drawn from arrays.
        labels: Labels are required (an error names what is missing).
        in_order: The subset of an array in its original order, drawn with ``rng.choice``;
            else shuffled, the first ``n`` of ``rng.permutation``. Two draws because the
            learners used both before they shared this function, and a seeded run must keep
            picking the same images.
        purpose: Why the caller needs the images (or their labels), named in the error
            when they are missing.

    Returns:
        ``(images, labels)``; ``labels`` is ``None`` when there are none.

    Raises:
        InvalidArgumentError: No images, an empty dataset, labels missing when required, or
            arrays of different lengths.

    Example:
        >>> import numpy as np
        >>> from pocketflow_tf.compat import tf
        >>> x = np.arange(20, dtype="float32")[:, None]
        >>> sample(x, n=5, seed=0, in_order=True)[0][:, 0]
        array([ 5.,  6.,  9., 10., 13.], dtype=float32)
        >>> ds = tf.data.Dataset.from_tensor_slices((x, x[:, 0] > 9)).batch(4)
        >>> xs, ys = sample(ds, n=6, seed=0)
        >>> xs[:, 0], ys
        (array([0., 1., 2., 3., 4., 5.], dtype=float32), array([False, False, False, False, False, False]))
        >>> sample(None, n=5, seed=0, purpose="DCP selects channels on them")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `x`: None. Accepted: training images (an array or a tf.data.Dataset): DCP selects channels on them.
    """
    n = options.check_integer("n", n, low=1)
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise errors.InvalidArgumentError(
                "y", "an array", "None when x is a tf.data.Dataset (it yields (x, y))"
            )
        xs, ys, got = [], [], 0
        for batch in x:
            pair = isinstance(batch, tuple | list) and len(batch) >= 2
            if labels and not pair:
                raise errors.InvalidArgumentError(
                    "x", "a dataset without labels", "a batched tf.data.Dataset of (x, y)"
                )
            xs.append(np.asarray(batch[0] if isinstance(batch, tuple | list) else batch))
            if pair:
                ys.append(np.asarray(batch[1]))
            got += len(xs[-1])
            if got >= n:
                break
        if not xs:
            raise errors.InvalidArgumentError("x", "an empty dataset", "training data")
        return np.concatenate(xs)[:n], (np.concatenate(ys)[:n] if ys else None)
    if x is None or (labels and y is None):
        if labels:
            why = f" ({purpose})" if purpose else ""
            accepted = f"arrays x and y{why}, or a tf.data.Dataset of (x, y)"
        else:
            why = f": {purpose}" if purpose else ""
            accepted = f"training images (an array or a tf.data.Dataset){why}"
        raise errors.InvalidArgumentError("x", None if x is None else "arrays without y", accepted)
    x = np.asarray(x)
    if len(x) == 0:
        raise errors.InvalidArgumentError("x", "an empty array", "training data")
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise errors.InvalidArgumentError(
                "y", f"{len(y)} labels for {len(x)} images", "one label per image"
            )
    rng = np.random.default_rng(seed)
    if in_order:
        idx = np.sort(rng.choice(len(x), size=min(n, len(x)), replace=False))
    else:
        idx = rng.permutation(len(x))[:n]
    return x[idx], None if y is None else y[idx]


__all__ = ["sample"]
