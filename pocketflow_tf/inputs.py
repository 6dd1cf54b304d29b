"""The input contract: what images, labels and models every entry point accepts.

Every entry that takes data (``Learner.fit`` of every learner, ``compress``,
``training.evaluate_accuracy``, ``TFLiteRunner.predict``, the data set loaders) checks it here,
before any work, so a bad input ends in one clear error naming the argument and the value,
never in a traceback from inside a graph or a silently wrong result.

The contract, one way everywhere:

* **Images** are floating point and taken as they are (cast to float32), or ``uint8`` pixels
  in 0..255, which are scaled to ``[0, 1]`` float32 (as :func:`datasets.from_arrays` and the
  data set loaders do). A model that expects 0..255 gets float images in 0..255. Other dtypes
  (``int32``, ``bool``, strings...) are refused: their scale cannot be known. Every value
  must be finite (NaN and inf are refused with their count and the first sample holding
  one). The shape must match the model's input; ``(N, H, W)`` is accepted for an
  ``(H, W, 1)`` input (the channel axis is added).
* **Labels** are class indices in ``[0, classes)``: integers, or floats holding whole
  numbers. One-hot rows ``(N, classes)`` are converted to indices; any other 2-D labels
  (soft labels, multi-label rows) are refused. One label per image.
* **Models** have one input and one output of shape ``(None, classes)`` with at least two
  classes; every label must be below ``classes``, and when the data set states its number of
  classes the model must output exactly that many.
* A ``tf.data.Dataset`` must yield ``(images, labels)`` batches and be finite (one pass is
  one epoch; an endless ``.repeat()`` is refused); its element spec is checked against the
  model, and its first batch's values like arrays. Every later batch is checked as it is
  read (NaN/inf images, labels out of range or not one-hot rows, images of another shape
  where the element spec leaves it open), and :func:`batch_error` turns such a failure
  into the same error naming the argument. ``uint8`` images and one-hot labels are
  converted by a ``map``.
* **Model weights** must be finite (:func:`finite_weights`): a model holding NaN or inf
  (e.g. from a diverged fine-tune) is refused by name.

Example:
    >>> import numpy as np
    >>> float(images(np.full((2, 4, 4, 1), 255, np.uint8)).max())
    1.0
    >>> labels(np.array([0.0, 2.5]), num_classes=3)
    Traceback (most recent call last):
    ...
    pocketflow_tf.errors.InvalidArgumentError: Invalid value for `y`: '1 fractional label(s), first at index 1: 2.5'. Accepted: integer class indices (floats only when they hold whole numbers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pocketflow_tf import errors, heads
from pocketflow_tf.compat import keras, tf

_IMAGES_ACCEPTED = (
    "floating-point images (taken as they are) or uint8 pixels 0..255 (scaled to [0, 1])"
)


def _refuse_marked(
    mask: np.ndarray, name: str, what: str, accepted: str, values: np.ndarray | None = None
) -> None:
    """Raises, naming how many samples ``mask`` marks (over the leading axis) and the first
    (with its value from ``values``), when it marks any."""
    per_sample = mask.reshape(len(mask), -1).any(axis=1) if mask.ndim > 1 else mask
    idx = np.flatnonzero(per_sample)
    if len(idx):
        shown = f": {values[idx[0]].item()!r}" if values is not None else ""
        raise errors.InvalidArgumentError(
            name, f"{len(idx)} {what}, first at index {idx[0]}{shown}", accepted
        )


def images(
    x: Any, *, name: str = "x", input_shape: tuple[int | None, ...] | None = None
) -> np.ndarray:
    """Checks images and returns them as float32 (``uint8`` scaled to ``[0, 1]``).

    Args:
        x: Array-like ``(N, ...)`` of images.
        name: The argument's name in errors.
        input_shape: The model's per-sample input shape (``None`` entries match anything);
            ``None`` skips the shape check.

    Returns:
        A float32 array (``x`` itself when it already was finite float32 of the right shape).

    Raises:
        InvalidArgumentError: Empty, of an unaccepted dtype, holding NaN/inf, or of a shape
            the model does not take.

    Example:
        >>> import numpy as np
        >>> images(np.zeros((3, 8, 8)), input_shape=(8, 8, 1)).shape
        (3, 8, 8, 1)
        >>> x = np.zeros((3, 2), np.float32); x[1, 0] = np.nan; x[2, 1] = np.inf
        >>> images(x)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `x`: '2 image(s) holding NaN or inf, first at index 1'. Accepted: finite values only.
    """
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise errors.InvalidArgumentError(name, type(x).__name__, "an array of images") from e
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / np.float32(255.0)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    else:
        raise errors.InvalidArgumentError(name, f"images of dtype {arr.dtype}", _IMAGES_ACCEPTED)
    if arr.ndim < 2 or len(arr) == 0:
        raise errors.InvalidArgumentError(
            name, f"array of shape {arr.shape}", "a non-empty batch of images (N, ...)"
        )
    if input_shape is not None:
        arr = _match_shape(arr, tuple(input_shape), name)
    _refuse_marked(~np.isfinite(arr), name, "image(s) holding NaN or inf", "finite values only")
    return arr


def _match_shape(arr: np.ndarray, want: tuple[int | None, ...], name: str) -> np.ndarray:
    if arr.ndim == len(want) and want[-1] == 1:
        arr = arr[..., None]  # (N, H, W) for an (H, W, 1) input, as the loaders accept
    ok = arr.ndim == len(want) + 1 and all(
        w is None or w == d for w, d in zip(want, arr.shape[1:], strict=True)
    )
    if not ok:
        shown = ", ".join("None" if w is None else str(w) for w in want)
        raise errors.InvalidArgumentError(
            name, f"images of shape {arr.shape}", f"images of shape (N, {shown}) for this model"
        )
    return arr


def labels(
    y: Any,
    *,
    name: str = "y",
    num_classes: int | None = None,
    n: int | None = None,
    why: str | None = None,
) -> np.ndarray:
    """Checks class labels and returns them as int64 indices.

    Args:
        y: Labels: ``(N,)`` or ``(N, 1)`` indices, or ``(N, num_classes)`` one-hot rows.
        name: The argument's name in errors.
        num_classes: Labels must lie in ``[0, num_classes)`` (``None``: only ``>= 0``).
        n: The number of images the labels belong to.
        why: Where ``num_classes`` comes from, said with an out-of-range label (default:
            the model's outputs or the data set's classes).

    Returns:
        int64 array ``(N,)``.

    Raises:
        InvalidArgumentError: Wrong length, fractional or non-numeric values, soft or
            multi-label rows, or a label out of range.

    Example:
        >>> import numpy as np
        >>> labels(np.eye(3)[[2, 0]], num_classes=3).tolist()
        [2, 0]
        >>> labels([0, 3], num_classes=3)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `y`: '1 label(s) outside [0, 3), first at index 1: 3'. Accepted: class indices 0..2 (the model has 3 outputs or the data set 3 classes).
    """
    try:
        arr = np.asarray(y)
    except Exception as e:
        raise errors.InvalidArgumentError(name, type(y).__name__, "an array of labels") from e
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.dtype.kind not in "iuf":
        raise errors.InvalidArgumentError(
            name, f"labels of dtype {arr.dtype}", "integer class indices (or one-hot rows)"
        )
    if arr.ndim == 2:
        arr = _from_one_hot(arr, name, num_classes)
    if arr.ndim != 1:
        raise errors.InvalidArgumentError(
            name, f"labels of shape {arr.shape}", "(N,) class indices or (N, classes) one-hot rows"
        )
    if n is not None and len(arr) != n:
        raise errors.InvalidArgumentError(
            name, f"{len(arr)} labels for {n} images", "one label per image"
        )
    if arr.dtype.kind == "f":
        _refuse_marked(
            ~np.isfinite(arr) | (arr != np.round(arr)),
            name,
            "fractional label(s)",
            "integer class indices (floats only when they hold whole numbers)",
            arr,
        )
    out = arr.astype(np.int64)
    span = f"[0, {num_classes})" if num_classes is not None else "[0, inf)"
    why = why or f"the model has {num_classes} outputs or the data set {num_classes} classes"
    accepted = (
        f"class indices 0..{num_classes - 1} ({why})"
        if num_classes is not None
        else "class indices >= 0"
    )
    bad = (out < 0) | (out >= num_classes if num_classes is not None else False)
    _refuse_marked(bad, name, f"label(s) outside {span}", accepted, out)
    return out


def _from_one_hot(arr: np.ndarray, name: str, num_classes: int | None) -> np.ndarray:
    one_hot = (
        (num_classes is None or arr.shape[1] == num_classes)
        and np.isin(arr, (0, 1)).all()
        and (arr.sum(axis=1) == 1).all()
    )
    if not one_hot:
        raise errors.InvalidArgumentError(
            name,
            f"2-D labels of shape {arr.shape} that are not one-hot rows",
            f"class indices (N,) or one-hot rows (N, {num_classes or 'classes'}); soft and "
            "multi-label targets are not supported",
        )
    return np.argmax(arr, axis=1)


def model_classes(model: keras.Model, *, num_classes: int | None = None) -> int | None:
    """The number of classes ``model`` outputs, checked to be a single classifier output.

    Args:
        model: A Keras model of the framework's Keras.
        num_classes: The data set's number of classes; when given, the model must output
            exactly that many.

    Returns:
        The number of classes: the width of the output, 2 for a one-unit binary classifier
        (``None`` when the model leaves it undefined).

    Raises:
        InvalidArgumentError: Several inputs or outputs, an output that is not
            ``(None, classes)`` with ``classes >= 2`` or a binary classifier's one unit, or
            a class count other than ``num_classes``.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
        >>> model_classes(m)
        5
        >>> model_classes(m, num_classes=10)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: 'a model with 5 outputs'. Accepted: a classifier with one output per class (10 classes in the data).
    """
    if len(model.inputs or ()) > 1 or len(model.outputs or ()) > 1:
        raise errors.InvalidArgumentError(
            "model",
            f"a model with {len(model.inputs)} inputs and {len(model.outputs)} outputs",
            "a model with one image input and one output (the class scores)",
        )
    try:
        shape = tuple(model.outputs[0].shape) if model.outputs else tuple(model.output_shape)
    except (AttributeError, RuntimeError):  # a subclassed model not built yet
        return None
    width = shape[-1] if len(shape) == 2 else None
    binary = width is not None and int(width) == 1 and heads.threshold(model) is not None
    if binary:
        width = 2  # a one-unit binary classifier: two classes (pocketflow_tf.heads)
    if len(shape) != 2 or (width is not None and int(width) < 2):
        raise errors.InvalidArgumentError(
            "model",
            f"a model whose output has shape {shape}",
            "an output of shape (None, classes) with at least 2 classes (logits or "
            "probabilities), or a binary classifier's one unit",
        )
    width = None if width is None else int(width)
    if num_classes is not None and width is not None and width != int(num_classes):
        raise errors.InvalidArgumentError(
            "model",
            "a binary classifier with one output unit (2 classes)"
            if binary
            else f"a model with {width} outputs",
            f"a classifier with one output per class ({num_classes} classes in the data)",
        )
    return width


def model_input_shape(model: keras.Model) -> tuple[int | None, ...] | None:
    """Per-sample input shape of a single-input model (``None`` when unknown).

    Example:
        >>> model_input_shape(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()]))
        (8, 8, 1)
    """
    if not model.inputs or len(model.inputs) != 1:
        return None
    return tuple(None if d is None else int(d) for d in model.inputs[0].shape[1:])


def built(model: Any, *, name: str = "model") -> None:
    """Refuses a ``Sequential`` model that was never built (no ``Input``, never called).

    It has no weights yet and no input shape to check data against (tf-keras and Keras 3
    alike).

    Example:
        >>> built(keras.Sequential([keras.layers.Dense(2)]))
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: 'a Sequential model that was never built (no Input, never called): it has no weights yet'. Accepted: a built model: keras.Input(shape) as its first layer, or a model trained (or called on a batch) first.
    """
    if type(model).__name__ == "Sequential" and not getattr(model, "built", True):
        raise errors.InvalidArgumentError(
            name,
            "a Sequential model that was never built (no Input, never called): it has no "
            "weights yet",
            "a built model: keras.Input(shape) as its first layer, or a model trained (or "
            "called on a batch) first",
        )


def float_input(model: keras.Model, *, name: str = "model") -> None:
    """Refuses a model whose input is not floating point, naming its dtype.

    Images reach models as float32 (``uint8`` pixels scaled to ``[0, 1]``). An integer input
    (``keras.Input(dtype="uint8")`` before a ``Rescaling``) would cast them back, truncating
    every pixel to 0 or 1: the model would train and be judged on black images, silently
    (measured: 29 % on a 4-class task the float twin learns).

    Example:
        >>> m = keras.Sequential([keras.Input((2,), dtype="uint8"), keras.layers.Dense(3)])
        >>> float_input(m)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: 'a model whose input is uint8'. Accepted: a model with a float input: images are fed as float32 (uint8 pixels scaled to [0, 1]) and an integer input would truncate them; build it with keras.Input(dtype='float32') and, if it rescales 0..255 pixels itself, pass them as float32 0..255 (x.astype('float32')), which are taken as they are.
    """
    for t in model.inputs or []:
        dtype = tf.as_dtype(t.dtype)
        if not dtype.is_floating:
            raise errors.InvalidArgumentError(
                name,
                f"a model whose input is {dtype.name}",
                "a model with a float input: images are fed as float32 (uint8 pixels scaled "
                "to [0, 1]) and an integer input would truncate them; build it with "
                "keras.Input(dtype='float32') and, if it rescales 0..255 pixels itself, pass "
                "them as float32 0..255 (x.astype('float32')), which are taken as they are",
            )


def arrays(
    model: keras.Model,
    x: Any,
    y: Any,
    *,
    names: tuple[str, str] = ("x", "y"),
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Checks images and labels for ``model``; returns them converted (float32, int64).

    Args:
        model: The model the data is for.
        x: Images.
        y: Labels.
        names: The arguments' names in errors.
        num_classes: The data set's classes, when it states them.

    Example:
        >>> import numpy as np
        >>> m = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
        ...                       keras.layers.Dense(3)])
        >>> xs, ys = arrays(m, np.zeros((2, 2, 2), np.uint8), [1, 2])
        >>> xs.shape, ys.dtype
        ((2, 2, 2, 1), dtype('int64'))
    """
    float_input(model)
    classes = model_classes(model, num_classes=num_classes)
    xs = images(x, name=names[0], input_shape=model_input_shape(model))
    ys = labels(
        y, name=names[1], num_classes=classes or num_classes, n=len(xs), why=_binary_note(model)
    )
    return xs, ys


def _binary_note(model: keras.Model) -> str | None:
    # A one-unit model counts as 2 classes: "the model has 2 outputs" would be wrong.
    if heads.threshold(model) is None:
        return None
    return "a binary classifier with one output unit: class 0 or 1"


def dataset(model: keras.Model, ds: tf.data.Dataset, *, name: str = "x") -> tf.data.Dataset:
    """Checks a batched ``(images, labels)`` dataset for ``model``; returns it converted.

    The element spec is checked against the model (structure, ranks, known sizes, dtypes),
    and the first batch's values like arrays (finite, labels in range). ``uint8`` images are
    scaled to ``[0, 1]`` and one-hot labels turned into indices by a ``map``.

    Example:
        >>> import numpy as np
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2), np.uint8), [0, 1, 2, 9]))
        >>> dataset(m, ds.batch(4))
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `x (first batch) labels`: '1 label(s) outside [0, 3), first at index 3: 9'. Accepted: class indices 0..2 (the model has 3 outputs or the data set 3 classes).
    """
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise errors.InvalidArgumentError(
            name, f"a dataset yielding {spec}", "a batched tf.data.Dataset of (images, labels)"
        )
    x_spec, y_spec = spec
    if not isinstance(x_spec, tf.TensorSpec) or not isinstance(y_spec, tf.TensorSpec):
        raise errors.InvalidArgumentError(
            name, f"a dataset yielding {spec}", "(images, labels) tensors, one of each"
        )
    float_input(model)
    classes = model_classes(model)
    want = model_input_shape(model)
    if want is not None and x_spec.shape.rank is not None:
        rank_ok = x_spec.shape.rank == len(want) + 1
        dims_ok = rank_ok and all(
            w is None or d is None or w == d for w, d in zip(want, x_spec.shape[1:], strict=True)
        )
        if not dims_ok:
            raise errors.InvalidArgumentError(
                name,
                f"a dataset of images shaped {tuple(x_spec.shape)}",
                f"batches of images shaped (batch, {', '.join(map(str, want))}) for this model",
            )
    if int(ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        # Every learner treats one pass as one epoch (and several read the data through for
        # calibration): an endless dataset would train, or sample, forever.
        raise errors.InvalidArgumentError(
            name,
            "an infinite dataset (made by .repeat())",
            "a finite dataset, one pass per epoch: drop .repeat() (fit's epochs= sets the "
            "passes) or bound it with .take(steps)",
        )
    first = next(iter(ds.take(1)), None)
    if first is None:
        raise errors.InvalidArgumentError(name, "an empty dataset", "at least one batch")
    xb, yb = (np.asarray(t) for t in first)
    images(xb, name=f"{name} (first batch) images")
    labels(yb, name=f"{name} (first batch) labels", num_classes=classes, why=_binary_note(model))
    one_hot = y_spec.shape.rank == 2 and yb.ndim == 2 and yb.shape[1] > 1
    # The first batch was checked above; the later ones are checked as training reads them
    # (a NaN image would otherwise poison the weights without a word, and a label out of
    # range end in a kernel error or, on GPU, a NaN loss).
    ds = ds.map(
        _batch_check(
            name,
            x_spec.dtype,
            y_spec.dtype,
            classes,
            one_hot=one_hot,
            # Dimensions the element spec leaves open are checked batch by batch: a later
            # batch of another size would otherwise fail inside the model with a raw error.
            input_shape=want if _open_dims(x_spec, want) else None,
            why=_binary_note(model),
        )
    )
    if x_spec.dtype == tf.uint8:
        ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b))
    if one_hot:
        ds = ds.map(lambda a, b: (a, tf.argmax(b, axis=-1)))
    return ds


#: Starts the message of a batch check (:func:`dataset`); :func:`batch_error` reads it back.
_BATCH_MARK = "[pocketflow_tf batch check]"


def _open_dims(x_spec: tf.TensorSpec, want: tuple[int | None, ...] | None) -> bool:
    """Whether the model fixes a dimension that the dataset's element spec leaves open."""
    if want is None or x_spec.shape.rank != len(want) + 1:
        return False
    return any(w is not None and d is None for w, d in zip(want, x_spec.shape[1:], strict=True))


def _batch_check(
    name: str,
    x_dtype: tf.DType,
    y_dtype: tf.DType,
    classes: int | None,
    *,
    one_hot: bool = False,
    input_shape: tuple[int | None, ...] | None = None,
    why: str | None = None,
):
    """A ``map`` function asserting a batch's images finite and its labels in range.

    ``classes``: the model's classes (``None`` checks only ``>= 0``). ``one_hot``: the labels
    are rows, converted afterwards; each must hold one 1 and zeros elsewhere, as
    :func:`labels` requires of arrays. ``input_shape``: the model's per-sample input shape,
    asserted when given (the element spec left some of it open). ``why``: where ``classes``
    comes from, said with an out-of-range label (default: the model's outputs).
    """

    def message(what: str, accepted: str) -> str:
        return f"{_BATCH_MARK}|{name}|{what}|{accepted}|"

    def check(a, b):
        if x_dtype.is_floating:
            a = tf.debugging.check_numerics(
                a, message("a later batch holding NaN or inf images", "finite values only")
            )
        if input_shape is not None:
            shown = ", ".join("None" if w is None else str(w) for w in input_shape)
            fixed = [(i + 1, w) for i, w in enumerate(input_shape) if w is not None]
            same = tf.reduce_all([tf.equal(tf.shape(a)[i], w) for i, w in fixed])
            with tf.control_dependencies(
                [
                    tf.debugging.Assert(
                        same,
                        [
                            message(
                                "a later batch of images of another shape",
                                f"images of shape (N, {shown}) for this model",
                            )
                        ],
                    )
                ]
            ):
                a = tf.identity(a)
        if one_hot:
            width = f"{classes}" if classes is not None else "classes"
            accepted = (
                f"one-hot rows (N, {width}), as in the first batch; soft and multi-label "
                "targets are not supported"
            )
            rows_ok = tf.logical_and(
                tf.reduce_all(tf.logical_or(tf.equal(b, 0), tf.equal(b, 1))),
                tf.reduce_all(tf.equal(tf.reduce_sum(tf.cast(b, tf.float64), axis=-1), 1.0)),
            )
            if classes is not None:  # the spec may leave the width open
                rows_ok = tf.logical_and(rows_ok, tf.equal(tf.shape(b)[-1], classes))
            deps = [
                tf.debugging.Assert(
                    rows_ok,
                    [message("a later batch with labels that are not one-hot rows", accepted)],
                )
            ]
            with tf.control_dependencies(deps):
                b = tf.identity(b)
        elif y_dtype.is_integer or y_dtype.is_floating:
            deps = []
            span = f"[0, {classes})" if classes is not None else "[0, inf)"
            accepted = (
                f"class indices 0..{classes - 1} ({why or f'the model has {classes} outputs'})"
                if classes is not None
                else "class indices >= 0"
            )
            what = f"a later batch with label(s) outside {span}"
            if y_dtype.is_floating:
                deps.append(
                    tf.debugging.Assert(
                        tf.reduce_all(tf.equal(b, tf.round(b))),
                        [message("a later batch with fractional label(s)", accepted)],
                    )
                )
            deps.append(tf.debugging.Assert(tf.reduce_all(b >= 0), [message(what, accepted)]))
            if classes is not None:
                deps.append(
                    tf.debugging.Assert(
                        tf.reduce_all(tf.cast(b, tf.float64) < classes), [message(what, accepted)]
                    )
                )
            with tf.control_dependencies(deps):
                b = tf.identity(b)
        return a, b

    return check


def batch_error(error: BaseException) -> errors.InvalidArgumentError | None:
    """The input-contract error for a failed batch check of :func:`dataset` (``None`` for
    any other error), to re-raise in place of TensorFlow's op error.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> ds = tf.data.Dataset.from_tensor_slices(([[0.0, 0.0], [np.nan, 0.0]], [0, 1]))
        >>> try:
        ...     list(dataset(m, ds.batch(1)))
        ... except tf.errors.InvalidArgumentError as e:
        ...     print(batch_error(e))
        Invalid value for `x`: 'a later batch holding NaN or inf images'. Accepted: finite values only.
    """
    text = getattr(error, "message", None) or str(error)
    at = text.find(_BATCH_MARK)
    if not isinstance(error, tf.errors.OpError) or at < 0:
        return None
    parts = text[at + len(_BATCH_MARK) :].split("|")
    if len(parts) < 4:
        return None
    _, name, what, accepted = parts[:4]
    return errors.InvalidArgumentError(name, what, accepted)


def nonfinite_weights(model: keras.Model) -> list[str]:
    """Names of ``model``'s weights holding NaN or inf (empty when all are finite).

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="fc")])
        >>> nonfinite_weights(m)
        []
    """
    bad = []
    for w in model.weights:
        value = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            bad.append(w.name)
    return bad


def finite_weights(model: keras.Model, *, name: str = "model") -> None:
    """Refuses a model whose weights hold NaN or inf (e.g. left by a diverged training).

    Raises:
        InvalidArgumentError: Naming ``name`` and the non-finite weights.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="fc")])
        >>> m.layers[0].bias.assign([np.nan, 0.0, 0.0])  # doctest: +ELLIPSIS
        <...>
        >>> finite_weights(m)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: 'a model with NaN or inf weights: fc/bias:0'. Accepted: a model with finite weights (NaN/inf weights come from a diverged training: train again at a lower learning rate).
    """
    bad = nonfinite_weights(model)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise errors.InvalidArgumentError(
            name,
            f"a model with NaN or inf weights: {shown}",
            "a model with finite weights (NaN/inf weights come from a diverged training: "
            "train again at a lower learning rate)",
        )
