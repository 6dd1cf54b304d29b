"""Opening a ``.tflite`` model with LiteRT, with one clear error for a file it cannot read.

LiteRT reports a missing, empty, truncated or foreign file as a bare ``ValueError`` ("The
model is not a valid Flatbuffer buffer", "Could not open ..."), which names neither the file
nor a remedy. Every place that builds an interpreter goes through :func:`open_interpreter`,
so such a file always ends in :class:`~pocketflow_tf.errors.ModelLoadError` naming it.

This module imports only LiteRT (no TensorFlow), like :mod:`pocketflow_tf.latency`.

Example:
    >>> from pocketflow_tf import tflite_load
    >>> tflite_load.open_interpreter("/no/such/model.tflite")
    Traceback (most recent call last):
    ...
    pocketflow_tf.errors.ModelLoadError: Cannot load model file '/no/such/model.tflite': the file does not exist; pass the path of an existing .tflite file
"""

from __future__ import annotations

import os

from ai_edge_litert.interpreter import Interpreter

from pocketflow_tf import errors

#: Appended to every "not a valid .tflite" message: what the user can do about it.
REMEDY = (
    "pass a complete file written by the TFLite converter (e.g. re-export it with "
    "tools/export_tflite.py)"
)


def open_interpreter(
    model: bytes | bytearray | memoryview | str | os.PathLike,
    *,
    num_threads: int | None = None,
    name: str = "model",
) -> Interpreter:
    """A LiteRT interpreter of ``model``; unreadable input raises a project error.

    Only the construction is guarded: it is where LiteRT parses and verifies the
    flatbuffer, so a bad file fails here, before any tensor is allocated.

    Args:
        model: Flatbuffer bytes or the path of a ``.tflite`` file.
        num_threads: Interpreter threads (``None``: LiteRT's default).
        name: The argument's name, echoed when ``model`` is of the wrong type.

    Returns:
        The interpreter (tensors not yet allocated).

    Raises:
        InvalidArgumentError: If ``model`` is neither bytes nor a path.
        ModelLoadError: If the file is missing, a folder, empty, or not a valid flatbuffer
            (truncated, random bytes, another format).

    Example:
        >>> open_interpreter(b"not a model")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.ModelLoadError: Cannot load model file '<11 bytes in memory>': not a valid .tflite file (LiteRT: The model is not a valid Flatbuffer buffer); pass a complete file written by the TFLite converter (e.g. re-export it with tools/export_tflite.py)
    """
    kwargs = {} if num_threads is None else {"num_threads": num_threads}
    if isinstance(model, bytes | bytearray | memoryview):
        content = bytes(model)
        label = f"<{len(content)} bytes in memory>"
        if not content:
            raise errors.ModelLoadError(label, f"the model is empty; {REMEDY}")
        source = {"model_content": content}
    elif isinstance(model, str | os.PathLike):
        label = os.fspath(model)
        if not os.path.exists(label):
            raise errors.ModelLoadError(
                label, "the file does not exist; pass the path of an existing .tflite file"
            )
        if os.path.isdir(label):
            raise errors.ModelLoadError(
                label, "it is a folder; pass the path of a .tflite file inside it"
            )
        if os.path.getsize(label) == 0:
            raise errors.ModelLoadError(label, f"the file is empty; {REMEDY}")
        source = {"model_path": label}
    else:
        raise errors.InvalidArgumentError(
            name, type(model).__name__, "flatbuffer bytes or a path to a .tflite file"
        )
    try:
        return Interpreter(**source, **kwargs)
    except (ValueError, RuntimeError) as e:
        # LiteRT's own message says what it disliked; it is kept, with the file and a remedy.
        raise errors.ModelLoadError(
            label, f"not a valid .tflite file (LiteRT: {str(e).strip()}); {REMEDY}"
        ) from e


def file_ops(interp: Interpreter) -> list[dict]:
    """The ops of the file an interpreter runs, in execution order, as LiteRT details them.

    XNNPACK's ``DELEGATE`` nodes (appended once tensors are allocated) list the tensors of
    the ops they took over; they are left out, so each tensor has one op that computes it.

    Example:
        >>> [op["op_name"] for op in file_ops(interp)]  # doctest: +SKIP
        ['CONV_2D', 'MEAN', 'FULLY_CONNECTED']
    """
    # Private, but LiteRT's only op-level view of the graph.
    return [op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]


def producer(interp: Interpreter, tensor: int, *, through: tuple[str, ...] = ()) -> dict | None:
    """The op that computes ``tensor``, looking past the ops named in ``through``.

    Args:
        interp: An interpreter of the file.
        tensor: A tensor index (e.g. ``interp.get_output_details()[0]["index"]``).
        through: Op names walked back over to the op feeding them (e.g.
            ``("QUANTIZE", "DEQUANTIZE")``: what an int8 file puts around its output).

    Returns:
        The op's LiteRT details (``op_name``, ``inputs``, ``outputs``, ``index``), or
        ``None`` when no op computes it (a model input or a constant).

    Example:
        >>> out = interp.get_output_details()[0]["index"]  # doctest: +SKIP
        >>> producer(interp, out, through=("DEQUANTIZE",))["op_name"]  # doctest: +SKIP
        'LOGISTIC'
    """
    by_output = {int(t): op for op in file_ops(interp) for t in op["outputs"]}
    op = by_output.get(int(tensor))
    while op is not None and op["op_name"] in through:
        op = by_output.get(int(op["inputs"][0]))
    return op
