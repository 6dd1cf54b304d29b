"""Safe model loading and saving: ``.keras``, ``.h5`` and SavedModel, Keras 2 and Keras 3.

* Model files are code: a ``Lambda`` layer carries Python bytecode. Without
  ``trust_unsafe=True`` (``--trust_model``) such a model is refused in every format, by
  inspecting the stored config *before* anything is deserialised.
* The framework uses tf-keras (Keras 2 API, what TFMOT accepts). A ``.keras`` file written by
  Keras 3 (or a ``.h5`` it wrote) cannot be read by tf-keras, so it is rebuilt: Keras 3 reads it (``safe_mode`` on),
  each standard layer is re-created in tf-keras from its config, wired the same way, and
  given the same weights. A layer outside :data:`BRIDGEABLE_LAYERS` is an error naming it.
* The same bridge works in memory: :func:`from_keras3` takes a Keras 3 model object,
  :func:`to_keras3` gives one back (:func:`is_keras3` tells them apart without importing
  Keras 3). It covers the ``keras.applications`` CNNs both ways: Keras 3 operation nodes
  (``x + 3.0``) become tf-keras ``TFOpLambda`` tf ops and back, ``hard_silu`` is rebuilt as
  tf-keras's MobileNetV3 writes it, ConvNeXt's ``LayerScale`` becomes a 1x1
  ``DepthwiseConv2D``; :func:`register_bridge` teaches it a user layer.
* Nothing is rebuilt silently different: options renamed between the two Keras are
  translated (``negative_slope`` / ``alpha``), an option the target lacks is dropped only at
  its default (else the layer is refused, naming it), and each rebuilt model is run beside the
  original on a seeded random batch and refused if the outputs differ, naming the first layer
  that differs. Later checks compare against the rebuilt model and could not see it.
* :func:`save_model` writes atomically; with ``keras3_copy=True`` a Keras 3 ``.keras`` file
  (same outputs) is written beside the framework's own, so a model that came in as Keras 3
  goes back out as Keras 3.
* A corrupt or truncated file gives :class:`~pocketflow_tf.errors.ModelLoadError` naming the
  file and what is wrong with it. Loading never writes anything.
* HDF5 has no checksum of its own (a flipped byte inside a weight loads silently), so every
  ``.h5``/``.hdf5`` :func:`save_model` writes gets ``<path>.sha256`` beside it (the
  ``sha256sum`` format, as for ``.tflite`` exports), checked on loading: a mismatch is refused.
  A ``.h5`` without one (written elsewhere) loads with a logged note that it cannot be
  verified. ``.keras`` zips are not given one: their members carry CRCs that loading checks.

Example:
    >>> import os, tempfile
    >>> from pocketflow_tf import model_io
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> p = os.path.join(tempfile.mkdtemp(), "m.keras")
    >>> model_io.save_model(m, p)["keras"] == p
    True
    >>> model_io.load_model_with_info(p).source_format
    'keras'
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import operator
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from pocketflow_tf import atomic_io, errors, layer_rules
from pocketflow_tf.compat import keras

#: Layer classes the bridge re-creates from their config (same names, options and weights in
#: both Keras). Beside these, the bridge rebuilds ``Normalization`` (statistics into the
#: config), Keras 3 operation nodes (``x + 3.0``) and tf-keras ``TFOpLambda`` tf ops, the
#: activations tf-keras lacks (``hard_silu``...), ``keras.applications``' ``LayerScale`` and
#: ``StochasticDepth``, nested models (inlined) and classes given to :func:`register_bridge`.
BRIDGEABLE_LAYERS = frozenset(
    {
        "InputLayer",
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
        "Dense",
        "Embedding",
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "Normalization",
        "ReLU",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "Softmax",
        "Activation",
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Concatenate",
        "Dot",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "MaxPooling1D",
        "MaxPooling2D",
        "AveragePooling1D",
        "AveragePooling2D",
        "Flatten",
        "Reshape",
        "Permute",
        "RepeatVector",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "GaussianNoise",
        "GaussianDropout",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "Cropping1D",
        "Cropping2D",
        "UpSampling1D",
        "UpSampling2D",
        "Rescaling",
        "Identity",
        "Resizing",
        "CenterCrop",
        # The identity at inference; they augment again in the learners' fine-tunes.
        *layer_rules.AUGMENTATION_LAYERS,
    }
)
_MODEL_CLASSES = ("Functional", "Sequential", "Model")
_ACCEPTED = "a .keras file, a .h5/.hdf5 file, or a SavedModel folder"


def check_model_path(name: str, path: str, *, time_it: str) -> None:
    """Refuses, before any work, a model argument that is a ``.tflite`` file (already
    exported; ``time_it`` says how to time it instead) or does not exist.

    Example:
        >>> check_model_path("MODEL", "m.tflite", time_it="pocketflow-tf latency m.tflite")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `MODEL`: 'm.tflite'. Accepted: a saved Keras model (.keras, .h5 or a SavedModel folder); a .tflite file is already exported (time it with: pocketflow-tf latency m.tflite).
    """
    if path.lower().endswith(".tflite"):
        raise errors.InvalidArgumentError(
            name,
            path,
            "a saved Keras model (.keras, .h5 or a SavedModel folder); a .tflite file is "
            f"already exported (time it with: {time_it})",
        )
    if not os.path.exists(path):
        raise errors.InvalidArgumentError(
            name, path, "an existing Keras model file (.keras, .h5) or SavedModel folder"
        )


_TRUST_HINT = (
    "pass trust_unsafe=True (flag --trust_model) only if you trust where the file came from"
)
#: Formats whose files get a ``<path>.sha256`` digest when saved (no checksum of their own).
DIGEST_EXTENSIONS = (".h5", ".hdf5")

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedModel:
    """A loaded model and where it came from.

    Attributes:
        model: The model, in the framework's Keras (tf-keras).
        path: The file or folder it was read from.
        source_format: ``"keras"``, ``"h5"`` or ``"savedmodel"``.
        saved_by_keras3: ``True`` when the file was written by Keras 3 and rebuilt.

    Example:
        >>> LoadedModel(None, "m.keras", "keras", False).source_format
        'keras'
    """

    model: Any
    path: str
    source_format: str
    saved_by_keras3: bool


def load_model(
    path: str | os.PathLike,
    *,
    trust_unsafe: bool = False,
    custom_objects: dict | None = None,
    compile: bool = False,
) -> keras.Model:
    """Loads a model file safely; see :func:`load_model_with_info`.

    Example:
        >>> load_model("/nonexistent.keras")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.ModelLoadError: Cannot load model file '/nonexistent.keras': it does not exist
    """
    return load_model_with_info(
        path, trust_unsafe=trust_unsafe, custom_objects=custom_objects, compile=compile
    ).model


def load_model_with_info(
    path: str | os.PathLike,
    *,
    trust_unsafe: bool = False,
    custom_objects: dict | None = None,
    compile: bool = False,
) -> LoadedModel:
    """Loads ``.keras`` (Keras 2 or 3), ``.h5`` or SavedModel into the framework's Keras.

    Args:
        path: The model file or SavedModel folder.
        trust_unsafe: Allow layers that carry Python code (``Lambda``).
        custom_objects: Custom classes by name (for the framework's own format only).
        compile: Restore the training configuration too.

    Returns:
        A :class:`LoadedModel`.

    Raises:
        errors.ModelLoadError: missing, corrupt, truncated, unsafe or unsupported file.

    Example:
        >>> load_model_with_info("model.onnx")  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.ModelLoadError: Cannot load model file 'model.onnx': ...
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise errors.ModelLoadError(path, "it does not exist")
    fmt = _detect_format(path)
    if fmt == "keras":
        config, metadata = _read_keras_zip(path)
        _check_safe(path, config, trust_unsafe)
        if str(metadata.get("keras_version", "")).startswith("3"):
            model = _load_keras3(path, config, trust_unsafe)
            return LoadedModel(model, path, fmt, True)
    elif fmt == "h5":
        _check_digest(path)
        config = _read_h5_config(path)
        _check_safe(path, config, trust_unsafe)
        if _h5_keras_version(path).startswith("3"):
            # Keras 3 writes .h5 configs tf-keras cannot read (InputLayer `batch_shape`).
            model = _load_keras3(path, config, trust_unsafe)
            return LoadedModel(model, path, fmt, True)
    else:
        _check_savedmodel_safe(path, trust_unsafe)
    from pocketflow_tf import qat  # imports TFMOT: only when a model is really loaded

    try:
        # The scope only adds TFMOT's quantization classes (library code, not the file's) so
        # that QAT models saved by the quantization learners load again.
        with qat.quantize_scope():
            if fmt == "keras":
                model = keras.models.load_model(
                    path,
                    custom_objects=custom_objects,
                    compile=compile,
                    safe_mode=not trust_unsafe,
                )
            else:
                model = keras.models.load_model(
                    path, custom_objects=custom_objects, compile=compile
                )
    except errors.PocketFlowError:
        raise
    except Exception as e:  # noqa: BLE001  (every reader error becomes one clear message)
        raise errors.ModelLoadError(path, _reason(e)) from e
    if not isinstance(model, keras.Model):
        raise errors.ModelLoadError(
            path, f"it holds a {type(model).__name__}, not a Keras model (a plain TF SavedModel?)"
        )
    return LoadedModel(model, path, fmt, False)


def save_model(
    model: keras.Model, path: str | os.PathLike, *, keras3_copy: bool = False
) -> dict[str, str]:
    """Saves ``model`` atomically (``.keras`` or ``.h5`` by extension).

    Args:
        model: A model of the framework's Keras.
        path: Destination ending in ``.keras``, ``.h5`` or ``.hdf5`` (``.h5``/``.hdf5`` only
            for quantization-aware models, see :mod:`pocketflow_tf.qat`). A ``.h5``/``.hdf5``
            gets ``<path>.sha256`` beside it, checked by :func:`load_model_with_info`.
        keras3_copy: Also write ``<stem>.keras3.keras``, readable by Keras 3's
            ``keras.models.load_model`` and giving the same outputs.

    Returns:
        ``{"keras": path}`` plus ``"keras3"`` when the copy was written.

    Example:
        >>> save_model(model, "out/model.keras", keras3_copy=True)  # doctest: +SKIP
        {'keras': 'out/model.keras', 'keras3': 'out/model.keras3.keras'}
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".keras", ".h5", ".hdf5"):
        raise errors.InvalidArgumentError("path", path, "a path ending in .keras, .h5 or .hdf5")
    from pocketflow_tf import qat

    if qat.is_quantized(model) and (ext == ".keras" or keras3_copy):
        # TFMOT 0.8.1: a QAT model written as .keras does not load again (see qat).
        raise errors.InvalidArgumentError(
            "path",
            path,
            "a .h5 path without a Keras 3 copy for a quantization-aware (TFMOT) model",
        )
    digest_path = path + ".sha256" if ext in DIGEST_EXTENSIONS else None
    digest = None
    with atomic_io.atomic_path(path) as tmp:
        model.save(tmp)
        if digest_path:
            digest = atomic_io.sha256_file(tmp)
            # The digest of an earlier save goes before the new file takes its place: a kill
            # between the rename and the new digest then leaves a file loaded with an
            # "unverified" note, never a good file refused for a stale digest.
            with contextlib.suppress(FileNotFoundError):
                os.remove(digest_path)
    if digest_path:
        atomic_io.write_text(digest_path, f"{digest}  {os.path.basename(path)}\n")
    out = {"keras": path}
    if keras3_copy:
        k3_path = os.path.splitext(path)[0] + ".keras3.keras"
        k3_model = to_keras3(model)
        with atomic_io.atomic_path(k3_path) as tmp:
            k3_model.save(tmp)
        out["keras3"] = k3_path
    return out


def require_graph(model: Any, purpose: str) -> None:
    """Raises a clear error when ``model`` has no layer graph (a subclassed model).

    Args:
        model: The model a learner wants to inspect or rebuild.
        purpose: What needs the graph, e.g. ``"channel pruning"``.

    Example:
        >>> class Net(keras.Model):
        ...     def call(self, x):
        ...         return x
        >>> require_graph(Net(), "channel pruning")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.UnsupportedModelError: channel pruning needs the model's layer graph, but 'Net' is a subclassed keras.Model whose graph is hidden in Python code; rebuild it with the functional API (keras.Model(inputs, outputs)) or keras.Sequential
    """
    if isinstance(model, keras.Model) and getattr(model, "_is_graph_network", False):
        return
    if isinstance(model, keras.Sequential):
        return
    raise errors.UnsupportedModelError(
        f"{purpose} needs the model's layer graph, but {type(model).__name__!r} is a subclassed "
        "keras.Model whose graph is hidden in Python code; rebuild it with the functional API "
        "(keras.Model(inputs, outputs)) or keras.Sequential"
    )


# -- reading and checking stored configs -------------------------------------------------
def _detect_format(path: str) -> str:
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        raise errors.ModelLoadError(path, f"a folder without saved_model.pb; accepted: {_ACCEPTED}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".keras":
        return "keras"
    if ext in (".h5", ".hdf5"):
        return "h5"
    raise errors.ModelLoadError(path, f"unknown extension {ext!r}; accepted: {_ACCEPTED}")


def _check_digest(path: str) -> None:
    """Refuses a file whose ``<path>.sha256`` (written by :func:`save_model`) disagrees."""
    digest_path = path + ".sha256"
    if not os.path.exists(digest_path):
        logger.warning(
            "%s has no %s beside it (not written by pocketflow-tf, or copied without it): "
            "its integrity cannot be verified",
            path,
            os.path.basename(digest_path),
        )
        return
    try:
        with open(digest_path, encoding="utf-8") as f:
            expected = f.read(200).split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError) as e:
        raise errors.ModelLoadError(
            path, f"its digest file {digest_path!r} is unreadable or empty ({_reason(e)})"
        ) from e
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise errors.ModelLoadError(
            path, f"its digest file {digest_path!r} holds {expected!r}, not a sha256 digest"
        )
    found = atomic_io.sha256_file(path)
    if found != expected:
        raise errors.ModelLoadError(
            path,
            f"sha256 digest mismatch: the file changed after it was written (corrupted on disk "
            f"or in a copy, or edited); {digest_path} says {expected[:16]}..., the file has "
            f"{found[:16]}...; save or copy the model again",
        )


def _read_keras_zip(path: str) -> tuple[dict, dict]:
    if not zipfile.is_zipfile(path):
        raise errors.ModelLoadError(
            path, "the file is corrupt or truncated (not a complete .keras zip archive)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise errors.ModelLoadError(path, "the archive has no config.json: not a model")
            bad = zf.testzip()
            if bad is not None:
                raise errors.ModelLoadError(path, f"the archive member {bad!r} is corrupt")
            config = json.loads(zf.read("config.json"))
            metadata = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
    except errors.ModelLoadError:
        raise
    except (zipfile.BadZipFile, json.JSONDecodeError, OSError, EOFError) as e:
        raise errors.ModelLoadError(path, f"the file is corrupt or truncated ({_reason(e)})") from e
    return config, metadata


def _read_h5_config(path: str) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        raise errors.ModelLoadError(
            path, f"the file is corrupt or truncated (not a readable HDF5 file: {_reason(e)})"
        ) from e
    if raw is None:
        raise errors.ModelLoadError(
            path, "the HDF5 file holds no model config (a weights-only file?)"
        )
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw)


def _h5_keras_version(path: str) -> str:
    """The ``keras_version`` attribute the writer stored in a ``.h5`` model ("" if none)."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("keras_version", "")
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _code_in(obj: Any):
    """Yields the name of every entry of a decoded config that holds Python code.

    The whole tree is searched, whatever its shape: the loaders read more shapes than a walk
    of ``config["layers"]`` sees (a legacy Sequential stores its layers as a bare list), and
    one missed shape would run the file's code. Code is a ``Lambda`` layer, Keras 3's
    serialised ``__lambda__`` and tf-keras's ``"function_type": "lambda"``.
    """
    if isinstance(obj, dict):
        cls = obj.get("class_name")
        inner = obj.get("config")
        if cls in ("Lambda", "__lambda__") or obj.get("function_type") == "lambda":
            yield str(inner.get("name", "?")) if isinstance(inner, dict) else str(cls)
        for value in obj.values():
            yield from _code_in(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _code_in(value)


def _refuse_code(path: str, name: str) -> None:
    raise errors.ModelLoadError(
        path,
        f"layer {name!r} is a Lambda layer, which holds Python code that would run on "
        f"loading; it was refused (safe mode). {_TRUST_HINT}",
    )


def _check_safe(path: str, config: Any, trust_unsafe: bool) -> None:
    if trust_unsafe:
        return
    for name in _code_in(config):
        _refuse_code(path, name)


def _check_savedmodel_safe(path: str, trust_unsafe: bool) -> None:
    if trust_unsafe:
        return
    meta = os.path.join(path, "keras_metadata.pb")
    if not os.path.exists(meta):
        return  # no Keras layers to revive: TensorFlow loads the graph, runs no Python
    # keras_metadata.pb holds each object's config as a JSON string. Decoded as tf-keras
    # decodes it (a byte search misses "Lambd\u0061", which JSON reads as "Lambda"); parsing
    # the protobuf and the JSON runs nothing of the file's.
    try:
        from tf_keras.protobuf import saved_metadata_pb2
    except ImportError:  # the TF 2.15 stack (Horovod lane): Keras 2 is the keras package
        from keras.protobuf import saved_metadata_pb2

    meta_pb = saved_metadata_pb2.SavedMetadata()
    try:
        with open(meta, "rb") as f:
            meta_pb.ParseFromString(f.read())
        configs = [json.loads(node.metadata) for node in meta_pb.nodes if node.metadata]
    except Exception as e:  # noqa: BLE001 - unreadable: its safety cannot be checked
        raise errors.ModelLoadError(
            path,
            f"its keras_metadata.pb cannot be read ({_reason(e)}), so it cannot be checked "
            f"for Python code; it was refused (safe mode). {_TRUST_HINT}",
        ) from e
    for config in configs:
        _check_safe(path, config, trust_unsafe)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


# -- the Keras 3 bridge ------------------------------------------------------------------
#: Keras 3 activations tf-keras lacks or computes differently (tf-keras's ``hard_sigmoid``
#: is ``clip(0.2 x + 0.5)``, Keras 3's is ``relu6(x + 3) / 6``). They are rebuilt from the
#: same standard layers and tf ops that tf-keras's own ``keras.applications.MobileNetV3`` uses.
_K3_REBUILT_ACTIVATIONS = frozenset({"hard_silu", "hard_swish", "hard_sigmoid"})
#: Classes of ``keras.applications`` (ConvNeXt) rebuilt from standard layers, both ways:
#: tf-keras does not register its copies, so a model holding them would not load again.
_APPLICATION_LAYERS = frozenset({"LayerScale", "StochasticDepth"})


def _binary(operator_fn: Callable, function: Callable) -> Callable:
    """A binary op written ``x + 3.0`` as models write it; by ``function`` when the left
    operand is an array (numpy would otherwise try to convert the symbolic right operand)."""

    def call(op, args):
        fn = function if isinstance(args[0], np.ndarray) else operator_fn
        return fn(args[0], args[1])

    return call


def _tf_ops() -> dict[str, Callable]:
    """Keras 3 operation nodes -> the tf-keras construction (a TFOpLambda, as tf-keras makes
    for ``x + 3.0`` on its own KerasTensors)."""
    from pocketflow_tf.compat import tf

    return {
        "Add": _binary(operator.add, tf.math.add),
        "Subtract": _binary(operator.sub, tf.math.subtract),
        "Multiply": _binary(operator.mul, tf.math.multiply),
        "Divide": _binary(operator.truediv, tf.math.truediv),
        "TrueDivide": _binary(operator.truediv, tf.math.truediv),
        "Maximum": _binary(tf.maximum, tf.maximum),
        "Minimum": _binary(tf.minimum, tf.minimum),
        "Negative": lambda op, args: -args[0],
        "Relu": lambda op, args: tf.nn.relu(args[0]),
        "Relu6": lambda op, args: tf.nn.relu6(args[0]),
        "Sigmoid": lambda op, args: tf.math.sigmoid(args[0]),
        "Silu": lambda op, args: tf.nn.silu(args[0]),
        "Tanh": lambda op, args: tf.math.tanh(args[0]),
        "HardSigmoid": lambda op, args: tf.nn.relu6(args[0] + 3.0) * (1.0 / 6.0),
        "HardSilu": lambda op, args: args[0] * (tf.nn.relu6(args[0] + 3.0) * (1.0 / 6.0)),
        "Mean": lambda op, args: tf.reduce_mean(
            args[0], axis=op.get_config().get("axis"), keepdims=op.get_config().get("keepdims")
        ),
    }


def _k3_ops() -> dict[str, Callable]:
    """tf-keras ``TFOpLambda`` symbols -> the Keras 3 construction (an operation node)."""
    from keras import ops

    return {
        "__operators__.add": _binary(operator.add, ops.add),
        "math.add": _binary(operator.add, ops.add),
        "math.subtract": _binary(operator.sub, ops.subtract),
        "math.multiply": _binary(operator.mul, ops.multiply),
        "math.truediv": _binary(operator.truediv, ops.divide),
        "math.divide": _binary(operator.truediv, ops.divide),
        "math.maximum": _binary(ops.maximum, ops.maximum),
        "math.minimum": _binary(ops.minimum, ops.minimum),
        "math.negative": lambda kw, args: -args[0],
        "nn.relu": lambda kw, args: ops.relu(args[0]),
        "nn.relu6": lambda kw, args: ops.relu6(args[0]),
        "math.sigmoid": lambda kw, args: ops.sigmoid(args[0]),
        "nn.sigmoid": lambda kw, args: ops.sigmoid(args[0]),
        "nn.silu": lambda kw, args: ops.silu(args[0]),
        "nn.swish": lambda kw, args: ops.silu(args[0]),
        "math.tanh": lambda kw, args: ops.tanh(args[0]),
        "nn.tanh": lambda kw, args: ops.tanh(args[0]),
        "math.reduce_mean": lambda kw, args: ops.mean(
            args[0], axis=kw.get("axis"), keepdims=bool(kw.get("keepdims", False))
        ),
    }


#: User rules: class name -> ``build(layer, dst_keras) -> layer of dst_keras``.
_USER_RULES: dict[str, Callable[[Any, Any], Any]] = {}


def register_bridge(class_name: str, build: Callable[[Any, Any], Any]) -> None:
    """Teaches the bridge a layer class of your own (both directions).

    ``build(layer, dst_keras)`` returns a layer of ``dst_keras`` (the ``keras`` module of
    Keras 3 or tf-keras) that computes the same function; it is called on the same inputs and
    given ``layer.get_weights()``. The class must also be loadable by the Keras that reads
    the saved model (``custom_objects`` or ``register_keras_serializable``).

    Args:
        class_name: ``type(layer).__name__`` of the layer to convert.
        build: The factory described above.

    Example:
        >>> register_bridge("Scale3", lambda layer, k: k.layers.Rescaling(3.0, name=layer.name))
        >>> "Scale3" in _USER_RULES
        True
        >>> del _USER_RULES["Scale3"]
    """
    if not callable(build):
        raise errors.InvalidArgumentError("build", build, "a callable (layer, dst_keras) -> layer")
    _USER_RULES[str(class_name)] = build


def _load_keras3(path: str, config: dict, trust_unsafe: bool) -> keras.Model:
    # Unsupported layers are reported from the stored config, before Keras 3 runs anything.
    for module, cls, name in _iter_layer_entries(config):
        if not _k3_entry_known(module, cls):
            raise errors.ModelLoadError(
                path,
                f"it was saved by Keras 3 and layer {name!r} of class {cls!r} (module "
                f"{module!r}) cannot be rebuilt in the framework's Keras (tf-keras); "
                f"{_REMEDY_K3}. Bridged layers: {', '.join(sorted(BRIDGEABLE_LAYERS))}",
            )
    # Keras 3 itself reads the file (weights layout, dtype policies, safe_mode): re-parsing
    # its zip/HDF5 layout by hand would track a private format. Only the rebuilt layers and
    # their weights are handed to tf-keras.
    import keras as keras3

    try:
        k3 = keras3.models.load_model(path, compile=False, safe_mode=not trust_unsafe)
    except Exception as e:  # noqa: BLE001
        raise errors.ModelLoadError(path, f"Keras 3 could not read it ({_reason(e)})") from e
    try:
        return _rebuild(k3, keras3, keras, to_keras3=False, trust_unsafe=trust_unsafe)
    except errors.UnsupportedModelError as e:
        raise errors.ModelLoadError(path, str(e)) from e


def _iter_layer_entries(config: Any):
    """Yields ``(module, class_name, name)`` of every stored layer/operation config."""
    if not isinstance(config, dict):
        return
    inner = config.get("config")
    if "class_name" in config and isinstance(inner, dict):
        yield str(config.get("module") or ""), config["class_name"], inner.get("name", "?")
        for layer in inner.get("layers", []) or []:
            yield from _iter_layer_entries(layer)
        yield from _iter_layer_entries(inner.get("layer"))


def _k3_entry_known(module: str, cls: str) -> bool:
    if module.startswith("keras.src.ops"):  # an operation node (`x + 3.0`), not a layer
        return cls in _tf_ops()
    if module.startswith("keras.src.applications"):
        return cls in _APPLICATION_LAYERS
    return (
        cls in BRIDGEABLE_LAYERS
        or cls in _MODEL_CLASSES
        or cls in _USER_RULES
        or cls in ("Normalization", "Lambda")  # Lambda: refused or allowed by _check_safe
    )


def is_keras3(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 model (not one of the framework's tf-keras).

    Keras 3 is not imported for the check: an object can only be a Keras 3 model if the
    ``keras`` package (version 3) was already imported by whoever built it.

    Args:
        obj: Anything.

    Returns:
        ``True`` for a Keras 3 ``keras.Model`` (functional, Sequential or subclassed).

    Example:
        >>> is_keras3(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        False
        >>> import keras as keras3
        >>> is_keras3(keras3.Sequential([keras3.Input((3,)), keras3.layers.Dense(2)]))
        True
    """
    k3 = sys.modules.get("keras")
    if k3 is None or not str(getattr(k3, "__version__", "")).startswith("3"):
        return False
    model_cls = getattr(k3, "Model", None)
    # On the TF 2.15 stack `keras` is Keras 2 (the version check above), and tf-keras's
    # Model is a different class from Keras 3's: isinstance tells them apart.
    return model_cls is not None and model_cls is not keras.Model and isinstance(obj, model_cls)


def from_keras3(model3: Any, *, trust_unsafe: bool = False) -> keras.Model:
    """Rebuilds a Keras 3 model in memory in the framework's Keras (tf-keras).

    Each layer is re-created from its config, wired the same way and given the same
    weights; outputs agree within float rounding. No file is written.

    Args:
        model3: A Keras 3 functional or Sequential model.
        trust_unsafe: Also rebuild ``Lambda`` layers (they carry Python code, run again
            by tf-keras); refused otherwise.

    Returns:
        A tf-keras ``keras.Model`` with the same layers, names and weights.

    Raises:
        errors.InvalidArgumentError: ``model3`` is not a Keras 3 model.
        errors.UnsupportedModelError: a subclassed model, or a layer the bridge cannot
            rebuild (the message names it, its class and what to do).

    Example:
        >>> import keras as keras3
        >>> m3 = keras3.Sequential([keras3.Input((3,)), keras3.layers.Dense(2)])
        >>> m2 = from_keras3(m3)
        >>> isinstance(m2, keras.Model), [w.shape for w in m2.get_weights()]
        (True, [(3, 2), (2,)])
    """
    if not is_keras3(model3):
        raise errors.InvalidArgumentError(
            "model3",
            type(model3).__name__,
            "a Keras 3 keras.Model (check with model_io.is_keras3); tf-keras models need no bridge",
        )
    if _graph(model3) is None:
        raise errors.UnsupportedModelError(
            f"bridging a Keras 3 model to tf-keras needs the model's layer graph, but "
            f"{type(model3).__name__!r} is a subclassed keras.Model whose graph is hidden in "
            "Python code; rebuild it with the functional API (keras.Model(inputs, outputs)) "
            "or keras.Sequential"
        )
    import keras as keras3

    return _rebuild(model3, keras3, keras, to_keras3=False, trust_unsafe=trust_unsafe)


def to_keras3(model: keras.Model):
    """A Keras 3 copy of a tf-keras model, with the same weights and outputs.

    Args:
        model: A tf-keras functional or Sequential model.

    Returns:
        A Keras 3 ``keras.Model`` giving the same outputs (float rounding).

    Raises:
        errors.InvalidArgumentError: ``model`` is already a Keras 3 model.
        errors.UnsupportedModelError: a subclassed model or a layer the bridge cannot
            rebuild (named, with what to do).

    Example:
        >>> m3 = to_keras3(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        >>> is_keras3(m3)
        True
    """
    import keras as keras3

    if is_keras3(model):
        raise errors.InvalidArgumentError(
            "model", type(model).__name__, "a tf-keras model (this one is Keras 3 already)"
        )
    require_graph(model, "saving a Keras 3 copy")
    # A Lambda layer of an in-memory model holds a function already loaded in this process
    # (its file, if any, was trusted when it was loaded): rebuilding it runs nothing new.
    return _rebuild(model, keras, keras3, to_keras3=True, trust_unsafe=True)


_REMEDY_K3 = (
    "build and save the model with tf-keras (import tf_keras as keras) instead, replace the "
    "layer by standard Keras layers, or teach the bridge with model_io.register_bridge()"
)
_REMEDY_TFK = (
    "replace the layer by standard Keras layers, or teach the bridge with "
    "model_io.register_bridge()"
)


def _unsupported(layer, to_keras3: bool, why: str = "") -> errors.UnsupportedModelError:
    """The error for a layer the bridge cannot rebuild: names it and says what to do."""
    cls_name = type(layer).__name__
    src, dst = ("tf-keras", "Keras 3") if to_keras3 else ("Keras 3", "tf-keras")
    return errors.UnsupportedModelError(
        f"layer {layer.name!r} of class {cls_name!r} cannot be rebuilt from {src} in {dst}"
        f"{' (' + why + ')' if why else ''}; {_REMEDY_TFK if to_keras3 else _REMEDY_K3}. "
        f"Bridged layers: {', '.join(sorted(BRIDGEABLE_LAYERS))}"
    )


#: Options that changed name between the two Keras: class -> {Keras 3 name: tf-keras name}.
#: A renamed option the filter below does not know is dropped, and the target class's default
#: silently replaces the user's value (``LeakyReLU(negative_slope=0.1)`` became slope 0.3).
_RENAMED: dict[str, dict[str, str]] = {"LeakyReLU": {"negative_slope": "alpha"}}

#: Options one Keras has and the other lacks whose value does not change what a rebuilt
#: layer with copied weights computes: execution hints, input-shape bookkeeping, the random
#: generator's kind. Any other option the target Keras lacks must hold its default.
_INERT_OPTIONS = frozenset(
    {
        "dynamic",
        "autocast",
        "fused",
        "conv_op",
        "batch_input_shape",
        "batch_shape",
        "input_shape",
        "input_dim",
        "input_length",
        "rng_type",
        "force_generator",
        "pool_dimensions",
        "pool_mode",
        "pool_function",
    }
)


def _init_parameters(cls: type) -> tuple[dict[str, Any], bool]:
    """``({option: default}, whether it takes **kwargs)`` over ``cls``'s ``__init__`` chain.

    A subclass that forwards ``**kwargs`` accepts its parents' options too (tf-keras's
    ``GlobalAveragePooling1D`` takes ``keepdims`` only through its base class).
    """
    options: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self":
                options.setdefault(p.name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return options, False
    return options, True


def _defaults(layer) -> dict[str, Any]:
    """The config values of a default-built layer of ``layer``'s class.

    The signature alone does not say: some options arrive through ``**kwargs`` (Keras 3's
    ``LayerNormalization(rms_scaling=...)``). A fresh layer with only the required options
    is asked instead; the signature's defaults stand in if it cannot be built.
    """
    options, _ = _init_parameters(type(layer))
    defaults = {k: v for k, v in options.items() if v is not inspect.Parameter.empty}
    cfg = layer.get_config()
    required = {k: cfg[k] for k, v in options.items() if v is inspect.Parameter.empty and k in cfg}
    with contextlib.suppress(Exception):  # a class that cannot be built from its config alone
        fresh = type(layer)(**required, **({"name": "pftf_defaults"} if "name" in options else {}))
        defaults.update(_plain(fresh.get_config()))
    return defaults


def _same_value(a: Any, b: Any) -> bool:
    """Config values equal up to list/tuple and int/float spelling."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b) or abs(float(a) - float(b)) <= 1e-7 * max(1.0, abs(a))
    return a == b


def _layer_config(layer, target, to_keras3: bool) -> tuple[type, dict]:
    """The target class and the config that rebuilds ``layer`` in the Keras ``target``.

    Options are carried over by name (renamed where the two Keras differ). An option the
    target class does not take is dropped only if it holds its default or cannot change the
    layer's output (:data:`_INERT_OPTIONS`); otherwise the layer is refused, naming the
    option and its value: a silently different layer would pass every later check, which
    compares against the rebuilt model.
    """
    cls_name = type(layer).__name__
    cls = getattr(target.layers, cls_name, None)
    if cls is None:
        raise _unsupported(layer, to_keras3, f"the target Keras has no {cls_name}")
    cfg = _plain(layer.get_config())
    if isinstance(cfg.get("dtype"), dict):  # Keras 3 stores a DTypePolicy object
        cfg["dtype"] = cfg["dtype"].get("config", {}).get("name", "float32")
    renames = _RENAMED.get(cls_name, {})
    if to_keras3:
        renames = {new: old for old, new in renames.items()}
    cfg = {renames.get(k, k): v for k, v in cfg.items()}
    accepted, _ = _init_parameters(cls)
    source_defaults = {renames.get(k, k): v for k, v in _defaults(layer).items()}
    lost = []
    for key in sorted(set(cfg) - set(accepted)):
        value = cfg.pop(key)
        default = source_defaults.get(key, inspect.Parameter.empty)
        if key in _INERT_OPTIONS or key.endswith(("_initializer", "_constraint")):
            continue
        if default is not inspect.Parameter.empty and _same_value(value, _plain(default)):
            continue
        if key in ("name", "trainable", "dtype"):
            continue  # a class without them (Keras 3's SpatialDropout) runs the same way
        lost.append(f"{key}={value!r}")
    if lost:
        raise _unsupported(
            layer,
            to_keras3,
            f"{'its options' if len(lost) > 1 else 'its option'} {', '.join(lost)} "
            f"{'have' if len(lost) > 1 else 'has'} no counterpart in the target Keras's {cls_name}",
        )
    if "name" in accepted or "name" in cfg:
        cfg["name"] = _name(layer, to_keras3)
    if cls_name == "BatchNormalization" and isinstance(cfg.get("axis"), list):
        # tf-keras stores BN's axis as a list, Keras 3 takes one int.
        if len(cfg["axis"]) != 1:
            raise _unsupported(layer, to_keras3, f"it normalises over axes {cfg['axis']}")
        cfg["axis"] = int(cfg["axis"][0])
    for key in list(cfg):
        # Initializers differ in options between the two Keras and do not matter for a
        # model whose weights are copied: the target class's defaults are used. Constraints
        # and penalties do matter: the learners train the model on.
        if key.endswith("_initializer"):
            del cfg[key]
        elif key.endswith(("_constraint", "_regularizer")) and cfg[key] is not None:
            kept = (_constraint if key.endswith("_constraint") else _regularizer)(cfg[key])
            if kept is None:
                raise _unsupported(
                    layer,
                    to_keras3,
                    f"its option {key}={_plain(cfg[key])!r} would be lost (carried: "
                    f"{', '.join(_CONSTRAINTS if key.endswith('_constraint') else _PENALTIES)}"
                    "), and the learners' fine-tunes would train without it",
                )
            cfg[key] = kept
    return cls, cfg


def _check_config_kept(layer, new, cfg: dict, to_keras3: bool) -> None:
    """Refuses a rebuilt layer whose config lost a value it was given.

    A class may take an option and still store another value (a default, a renamed
    option): comparing the rebuilt layer's own config with what it was given catches it.
    """
    try:
        got = _plain(new.get_config())
    except Exception:  # noqa: BLE001 - a layer without a config has nothing to compare
        return
    for key, value in cfg.items():
        # Activations are stored by alias ("silu" comes back "swish"), the same function.
        if key in ("name", "dtype", "activation") or key.endswith("_regularizer"):
            continue
        if key not in got:
            continue
        if not isinstance(value, str | int | float | bool | list | tuple | type(None)):
            continue
        if not _same_value(value, got[key]):
            raise _unsupported(
                layer,
                to_keras3,
                f"its option {key}={value!r} became {got[key]!r} in the target Keras",
            )


#: The weight penalties both Keras define alike, with the options they share.
_PENALTIES = {
    "L1": ("l1",),
    "L2": ("l2",),
    "L1L2": ("l1", "l2"),
    "OrthogonalRegularizer": ("factor", "mode"),
}
#: The weight constraints both Keras define alike, with the options they share.
_CONSTRAINTS = {
    "MaxNorm": ("max_value", "axis"),
    "MinMaxNorm": ("min_value", "max_value", "rate", "axis"),
    "NonNeg": (),
    "UnitNorm": ("axis",),
}


def _shared(conf: Any, table: dict[str, tuple[str, ...]]) -> dict | None:
    name = conf.get("class_name") if isinstance(conf, dict) else None
    if name not in table:
        return None
    config = conf.get("config") or {}
    return {"class_name": name, "config": {k: v for k, v in config.items() if k in table[name]}}


def _regularizer(conf: Any) -> dict | None:
    """An L1/L2 penalty's config for either Keras (``None``: another regularizer)."""
    out = _shared(conf, _PENALTIES)
    if out is not None:
        out["config"] = {
            k: float(v) if k in ("l1", "l2", "factor") else v for k, v in out["config"].items()
        }
    return out


def _constraint(conf: Any) -> dict | None:
    """A standard constraint's config for either Keras (``None``: another constraint)."""
    return _shared(conf, _CONSTRAINTS)


def _plain(obj: Any) -> Any:
    """Drops Keras 3's ``module``/``registered_name`` keys so both Keras read the config."""
    if isinstance(obj, dict):
        if "class_name" in obj and "config" in obj:
            return {"class_name": obj["class_name"], "config": _plain(obj["config"])}
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _rebuild(src, src_keras, dst, *, to_keras3: bool, trust_unsafe: bool = False):
    """Re-creates ``src`` (functional or Sequential) layer by layer in the Keras ``dst``."""
    bridge = _Bridge(dst, to_keras3=to_keras3, trust_unsafe=trust_unsafe)
    graph = _graph(src)
    for layer, node in _nodes_in_order(graph):
        if type(layer).__name__ == "InputLayer":
            t = _node_outputs(node)[0]
            dtype = getattr(t.dtype, "name", t.dtype)  # tf.DType in tf-keras, str in Keras 3
            bridge.made[id(t)] = dst.Input(
                batch_shape=tuple(t.shape), dtype=dtype, name=_name(layer, to_keras3)
            )
    inputs = [bridge.made[id(t)] for t in graph.inputs]
    bridge.graph(graph)
    outputs = [bridge.made[id(t)] for t in graph.outputs]
    rebuilt = dst.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=src.name,
    )
    with warnings.catch_warnings():
        # Keras 3 warns when a one-input model is fed a bare array instead of a list.
        warnings.simplefilter("ignore", UserWarning)
        _check_same_outputs(src, rebuilt, to_keras3)
    return rebuilt


#: Largest output difference accepted between a model and its rebuilt copy, relative to the
#: output's scale. float32 rounding through a deep network usually stays near 1e-6, but a
#: channel-pruned MobileNetV2 (alpha 0.35, its kept convolutions refitted by least squares)
#: measured 1.5e-4 on the random probe (0.0049 at scale 139 on real images, every top-1
#: class the same): at 1e-4 its way back to Keras 3 was refused after the whole run. The
#: bridge mistakes this check exists for measured 5e-2 and more (a flipping RandomFlip, a
#: lost sigmoid).
_BRIDGE_RTOL = 1e-3


def _check_same_outputs(src, rebuilt, to_keras3: bool) -> None:
    """Refuses a rebuilt model that computes something else than ``src``.

    Every later check (the fine-tune's accuracy, the TFLite verification) compares against
    the rebuilt model, so a layer rebuilt with a different option would pass them all; the
    two models are run here on the same seeded random batch instead. Models with integer
    inputs (token ids, whose valid range the bridge cannot know) are not probed.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batch = []
    for t in _graph(src).inputs:
        dtype = str(getattr(t.dtype, "name", t.dtype))
        if not dtype.startswith(("float", "bfloat")):
            return
        # Unknown sizes get 32: large enough for a few strided stages without padding.
        shape = [2] + [32 if d is None else int(d) for d in tuple(t.shape)[1:]]
        batch.append(rng.standard_normal(shape).astype(np.float32))
    feed = batch if len(batch) > 1 else batch[0]
    rtol = _bridge_rtol(_graph(src))
    try:
        ref = [np.asarray(v, dtype=np.float64) for v in tf.nest.flatten(src(feed, training=False))]
    except Exception:  # noqa: BLE001 - the source cannot run this probe: nothing to compare
        logger.info(
            "the rebuilt model of %r was not compared: the source cannot run a probe", src.name
        )
        return
    try:
        got = [
            np.asarray(v, dtype=np.float64) for v in tf.nest.flatten(rebuilt(feed, training=False))
        ]
    except Exception as e:  # noqa: BLE001
        raise errors.UnsupportedModelError(
            f"the rebuilt copy of model {src.name!r} cannot run an input the original runs "
            f"({_reason(e)}); {_REMEDY_TFK if to_keras3 else _REMEDY_K3}"
        ) from e
    for i, (r, g) in enumerate(zip(ref, got, strict=False)):
        if _close(r, g, rtol):
            continue
        finite = np.isfinite(r)
        scale = _scale(r)
        diff = float(np.abs(g - r)[finite].max(initial=0.0)) if r.shape == g.shape else None
        what = (
            f"max |difference| {diff:.3g}"
            if diff is not None
            else f"shape {g.shape} instead of {r.shape}"
        )
        raise errors.UnsupportedModelError(
            f"the rebuilt copy of model {src.name!r} does not compute the same function: output "
            f"{i} differs on a random input ({what}, output scale {scale:.3g})"
            f"{_first_differing_layer(src, rebuilt, feed, to_keras3, rtol)}; "
            f"{_REMEDY_TFK if to_keras3 else _REMEDY_K3}"
        )


def _scale(ref: np.ndarray) -> float:
    """The largest finite ``|value|`` of ``ref``, at least 1."""
    return max(1.0, float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0)))


def _close(ref: np.ndarray, got: np.ndarray, rtol: float) -> bool:
    """Same shape, and equal within ``rtol`` of ``ref``'s scale where ``ref`` is finite."""
    finite = np.isfinite(ref)
    return ref.shape == got.shape and np.allclose(
        got[finite], ref[finite], rtol=0, atol=rtol * _scale(ref)
    )


def _bridge_rtol(graph) -> float:
    """The output tolerance for a graph: float16/bfloat16 compute (mixed precision) rounds
    far above float32's :data:`_BRIDGE_RTOL` (a 4-block mixed_float16 CNN: 2.5e-4)."""
    rtol = _BRIDGE_RTOL
    for layer, _node in _nodes_in_order(graph):
        inner = _graph(layer)
        if inner is not None:
            rtol = max(rtol, _bridge_rtol(inner))
            continue
        dtype = str(getattr(layer, "compute_dtype", None) or "float32")
        if "bfloat16" in dtype:
            rtol = max(rtol, 5e-2)  # 8 significant bits
        elif "float16" in dtype:
            rtol = max(rtol, 1e-2)  # 11 significant bits
    return rtol


def _first_differing_layer(src, rebuilt, feed, to_keras3: bool, rtol: float) -> str:
    """``", first at layer 'x' (Class)"`` by comparing each layer's output, or ``""``."""
    import keras as keras3
    import tensorflow as tf

    src_model, dst_model = (keras.Model, keras3.Model) if to_keras3 else (keras3.Model, keras.Model)
    for layer, _node in _nodes_in_order(_graph(src)):
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            target = rebuilt.get_layer(_name(layer, to_keras3))
            a = src_model(_graph(src).inputs, layer.output)
            b = dst_model(rebuilt.inputs, target.output)
            ra = [np.asarray(v, np.float64) for v in tf.nest.flatten(a(feed, training=False))]
            rb = [np.asarray(v, np.float64) for v in tf.nest.flatten(b(feed, training=False))]
        except Exception:  # noqa: BLE001 - shared or inlined layers have no single output
            continue
        for u, v in zip(ra, rb, strict=False):
            if not _close(u, v, rtol):
                return f", first at layer {layer.name!r} ({type(layer).__name__})"
    return ""


class _Bridge:
    """Walks a source graph and calls, for each node, the matching ``dst`` construction.

    Tensors are matched by the identity of the source KerasTensors; each source layer is
    converted once (shared layers stay shared), its weights copied after its first call.
    Nested models (ConvNeXt's Sequential stem) are inlined: the channel graph, the surgery
    and TFMOT all handle a flat functional model best.
    """

    def __init__(self, dst, *, to_keras3: bool, trust_unsafe: bool):
        self.dst = dst
        self.to_keras3 = to_keras3
        self.trust_unsafe = trust_unsafe
        self.made: dict[int, Any] = {}  # id(source KerasTensor) -> target tensor
        self.calls: dict[int, Callable] = {}  # id(source layer) -> (args, kwargs) -> outputs

    def graph(self, graph) -> None:
        for layer, node in _nodes_in_order(graph):
            if type(layer).__name__ == "InputLayer":
                continue
            if _graph(layer) is not None:
                outs = self.nested(layer, node)
            else:
                if id(layer) not in self.calls:
                    self.calls[id(layer)] = self.converter(layer, node)
                args, kwargs = _node_arguments(node)
                args, kwargs = self.map(args, layer), self.map(kwargs, layer)
                outs = self.calls[id(layer)](list(args), kwargs)
            outs = list(outs) if isinstance(outs, list | tuple) else [outs]
            for s, o in zip(_node_outputs(node), outs, strict=True):
                self.made[id(s)] = o

    def nested(self, model, node) -> list:
        inner = _graph(model)
        for t_in, t_out in zip(inner.inputs, _node_inputs(node), strict=True):
            self.made[id(t_in)] = self.map(t_out, model)
        self.graph(inner)
        return [self.made[id(t)] for t in inner.outputs]

    def map(self, obj: Any, layer) -> Any:
        """Source call arguments -> target ones (KerasTensors replaced, constants kept)."""
        if isinstance(obj, list | tuple):
            return type(obj)(self.map(v, layer) for v in obj)
        if isinstance(obj, dict):
            return {k: self.map(v, layer) for k, v in obj.items()}
        if type(obj).__name__ == "KerasTensor":
            if id(obj) not in self.made:
                raise _unsupported(
                    layer, self.to_keras3, "it takes an input the bridge cannot trace"
                )
            return self.made[id(obj)]
        if hasattr(obj, "numpy") or hasattr(obj, "__array__"):  # a tensor or array constant
            value = np.asarray(obj)
            return value.item() if value.ndim == 0 else value
        return obj

    # -- choosing the construction for one layer --------------------------------------
    def converter(self, layer, node) -> Callable:
        cls_name = type(layer).__name__
        module = type(layer).__module__
        if cls_name == "Lambda":
            return self.lambda_layer(layer)
        if cls_name in _USER_RULES:
            return self.layer_call(_USER_RULES[cls_name](layer, self.dst), layer)
        if not self.to_keras3 and module.startswith("keras.src.ops"):
            ops = _tf_ops()
            if cls_name not in ops:
                raise _unsupported(layer, False, f"the operation {cls_name} has no tf-keras rule")
            return lambda args, kwargs: ops[cls_name](layer, args)
        if self.to_keras3 and cls_name == "TFOpLambda":
            return self.tf_op(layer)
        if cls_name in _APPLICATION_LAYERS and ".applications." in module:
            return self.application_layer(layer, node)
        if cls_name == "Normalization":
            return self.normalization(layer)
        if cls_name in BRIDGEABLE_LAYERS:
            return self.standard(layer)
        raise _unsupported(layer, self.to_keras3)

    def layer_call(self, new, layer, weights: list | None = None, post: str | None = None):
        """Calls ``new`` like the source layer; gives it the weights after its first call."""
        state = {"copied": False}

        def call(args, kwargs):
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            out = new(*args, **kwargs)
            if not state["copied"]:
                w = layer.get_weights() if weights is None else weights
                if w:
                    new.set_weights([np.asarray(v) for v in w])
                state["copied"] = True
            return (
                self.activation(out, post, f"{_name(layer, self.to_keras3)}_{post}")
                if post
                else out
            )

        return call

    def standard(self, layer) -> Callable:
        cls, cfg = _layer_config(layer, self.dst, self.to_keras3)
        act = cfg.get("activation")
        if "activation" in cfg and not isinstance(act, str):
            raise _unsupported(layer, self.to_keras3, f"its activation {act!r} is not built in")
        post = None
        if isinstance(act, str) and self.rebuilds_activation(layer, act):
            if type(layer).__name__ == "Activation":
                return lambda args, kwargs: self.activation(
                    args[0], act, _name(layer, self.to_keras3)
                )
            # The layer runs linear and the activation follows as its own construction.
            cfg["activation"] = "linear"
            post = act
        new = cls(**cfg)
        _check_config_kept(layer, new, cfg, self.to_keras3)
        return self.layer_call(new, layer, post=post)

    def rebuilds_activation(self, layer, act: str) -> bool:
        if self.to_keras3:
            return act == "hard_sigmoid"  # tf-keras's clip(0.2 x + 0.5): Keras 3 has no such
        if act in _K3_REBUILT_ACTIVATIONS:
            return True
        try:
            keras.activations.get(act)
        except ValueError as e:
            raise _unsupported(layer, False, f"tf-keras has no activation {act!r}") from e
        return False

    def activation(self, x, act: str, name: str):
        layers = self.dst.layers
        if self.to_keras3:  # tf-keras hard_sigmoid = clip(0.2 x + 0.5, 0, 1)
            x = layers.Rescaling(0.2, offset=0.5, name=f"{name}_affine")(x)
            return layers.ReLU(max_value=1.0, name=name)(x)
        # Keras 3: hard_sigmoid(x) = relu6(x + 3) / 6, hard_silu(x) = x * hard_sigmoid(x),
        # written exactly as tf_keras.applications.mobilenet_v3 writes them.
        gate = layers.ReLU(6.0, name=f"{name}_relu6")(x + 3.0) * (1.0 / 6.0)
        if act == "hard_sigmoid":
            return gate
        return layers.Multiply(name=name)([x, gate])

    def lambda_layer(self, layer) -> Callable:
        if not self.trust_unsafe:
            raise errors.UnsupportedModelError(
                f"layer {layer.name!r} is a Lambda layer, which holds Python code; it was "
                f"refused (safe mode). {_TRUST_HINT}"
            )
        # The same Python function is called on the other Keras's tensors.
        new = self.dst.layers.Lambda(
            layer.function, arguments=dict(layer.arguments or {}), name=_name(layer, True)
        )
        return self.layer_call(new, layer)

    def tf_op(self, layer) -> Callable:
        ops = _k3_ops()
        symbol = getattr(layer, "symbol", "?")
        if symbol not in ops:
            raise _unsupported(layer, True, f"the tf op {symbol!r} has no Keras 3 rule")
        signature = inspect.signature(layer.function)

        def call(args, kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            bound.pop("name", None)
            return ops[symbol](bound, list(bound.values()))

        return call

    def normalization(self, layer) -> Callable:
        # Mean and variance go into the config, as keras.applications' EfficientNetV2 and
        # ConvNeXt write them: the adapt-state weights are laid out differently per Keras.
        def flat(t):
            v = np.asarray(t, dtype=np.float64).reshape(-1)
            return v.tolist() if v.size > 1 else float(v[0])

        cfg = layer.get_config()
        new = self.dst.layers.Normalization(
            axis=cfg.get("axis", -1),
            mean=flat(layer.mean),
            variance=flat(layer.variance),
            invert=bool(cfg.get("invert", False)),
            name=_name(layer, self.to_keras3),
        )
        return self.layer_call(new, layer, weights=[])

    def application_layer(self, layer, node) -> Callable:
        shape = tuple(_node_inputs(node)[0].shape)
        layers = self.dst.layers
        if type(layer).__name__ == "StochasticDepth":
            # Drops a sample's whole residual branch: Dropout with one mask value per sample
            # is the same computation (identity at inference), in a standard layer.
            rate = float(layer.get_config().get("drop_path_rate", 0.0))
            noise = (None,) + (1,) * (len(shape) - 1)
            return self.layer_call(
                layers.Dropout(rate, noise_shape=noise, name=_name(layer, self.to_keras3)),
                layer,
                weights=[],
            )
        # LayerScale: x * gamma per channel == a 1x1 depthwise convolution without bias.
        gamma = np.asarray(layer.gamma)
        if len(shape) != 4 or gamma.shape != (shape[-1],):
            raise _unsupported(
                layer,
                self.to_keras3,
                f"a per-channel scale is rebuilt on NHWC inputs only; input {shape}, "
                f"gamma {gamma.shape}",
            )
        new = layers.DepthwiseConv2D(1, use_bias=False, name=_name(layer, self.to_keras3))
        return self.layer_call(new, layer, weights=[gamma.reshape(1, 1, -1, 1)])


def _name(layer, to_keras3: bool) -> str:
    """The layer's name in the target Keras: Keras 3 refuses ``/`` (tf-keras's MobileNetV3
    names a layer ``Conv/BatchNorm``), so it becomes ``_`` there."""
    return layer.name.replace("/", "_") if to_keras3 else layer.name


def _graph(model) -> Any:
    """The layer graph of a functional or Sequential model (``None`` for other layers)."""
    inner = getattr(model, "_functional", None)  # a Keras 3 Sequential wraps a Functional
    if inner is not None:
        return inner
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None) is not None:
        return model
    return None


def _nodes_in_order(graph):
    """``(layer, node)`` pairs of the graph in topological order."""
    pairs = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            # tf-keras nodes name their layer `layer`, Keras 3 nodes `operation`.
            pairs.append((getattr(node, "operation", None) or node.layer, node))
    return pairs


def _node_arguments(node) -> tuple[tuple, dict]:
    """The positional and keyword arguments the node was called with.

    Keras 3 records the ``training`` default of the layer's ``call`` signature in every node
    (``Dropout``: False, ``RandomFlip``: True). Passed on, it would freeze the rebuilt layer
    in that mode: a Dropout that never drops in the learners' fine-tunes, a RandomFlip that
    flips at inference. So a recorded ``training`` equal to that default is left out (the
    rebuilt layer follows the model's mode, as the original does); one that differs was
    passed by the user (``base_model(x, training=False)``) and is kept.
    """
    if not hasattr(node, "arguments"):  # tf-keras records only what the call passed
        return tuple(node.call_args), dict(node.call_kwargs)
    args, kwargs = tuple(node.arguments.args), dict(node.arguments.kwargs)
    if "training" in kwargs:
        try:
            default = inspect.signature(node.operation.call).parameters["training"].default
        except (AttributeError, KeyError, TypeError, ValueError):
            default = inspect.Parameter.empty
        if kwargs["training"] is default or kwargs["training"] == default:
            del kwargs["training"]
    return args, kwargs


def _node_inputs(node) -> list:
    if hasattr(node, "keras_inputs"):  # tf-keras
        return list(node.keras_inputs)
    return list(node.input_tensors)


def _node_outputs(node) -> list:
    out = node.outputs if hasattr(node, "outputs") else node.output_tensors
    return list(out) if isinstance(out, list | tuple) else [out]
