"""Safe model loading and saving: ``.keras``, ``.h5`` and SavedModel, Keras 2 and Keras 3.

* Model files are code: a ``Lambda`` layer carries Python bytecode. Without
  ``trust_unsafe=True`` (``--trust_model``) such a model is refused in every format, by
  inspecting the stored config *before* anything is deserialised.
* The framework uses tf-keras (Keras 2 API, what TFMOT accepts). A ``.keras`` file written by
  Keras 3 cannot be read by tf-keras, so it is rebuilt: Keras 3 reads it (``safe_mode`` on),
  each standard layer is re-created in tf-keras from its config, wired the same way, and
  given the same weights. A layer outside :data:`BRIDGEABLE_LAYERS` is an error naming it.
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
import os
import re
import sys
import zipfile
from typing import Any

import numpy as np

from pocketflow_tf import atomic_io, errors
from pocketflow_tf.compat import keras

#: Layer classes the Keras 3 -> tf-keras bridge re-creates (same names in both Keras).
BRIDGEABLE_LAYERS = frozenset(
    {
        "InputLayer",
        "Conv1D",
        "Conv2D",
        "Conv2DTranspose",
        "DepthwiseConv2D",
        "SeparableConv2D",
        "Dense",
        "BatchNormalization",
        "LayerNormalization",
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
        "GlobalAveragePooling2D",
        "GlobalMaxPooling2D",
        "MaxPooling2D",
        "AveragePooling2D",
        "Flatten",
        "Reshape",
        "Permute",
        "Dropout",
        "SpatialDropout2D",
        "ZeroPadding2D",
        "Cropping2D",
        "UpSampling2D",
        "Rescaling",
        "Identity",
    }
)
_MODEL_CLASSES = ("Functional", "Sequential", "Model")
_ACCEPTED = "a .keras file, a .h5/.hdf5 file, or a SavedModel folder"
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
        _check_safe(path, _read_h5_config(path), trust_unsafe)
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


def _iter_layers(config: Any):
    """Yields ``(class_name, name)`` of every layer config, nested models and wrappers too."""
    if not isinstance(config, dict):
        return
    inner = config.get("config")
    if "class_name" in config and isinstance(inner, dict):
        yield config["class_name"], inner.get("name", "?")
        for layer in inner.get("layers", []) or []:  # Functional / Sequential
            yield from _iter_layers(layer)
        yield from _iter_layers(inner.get("layer"))  # TimeDistributed, Bidirectional...


def _check_safe(path: str, config: dict, trust_unsafe: bool) -> None:
    if trust_unsafe:
        return
    for cls, name in _iter_layers(config):
        if cls == "Lambda":
            raise errors.ModelLoadError(
                path,
                f"layer {name!r} is a Lambda layer, which holds Python code that would run on "
                f"loading; it was refused (safe mode). {_TRUST_HINT}",
            )


def _check_savedmodel_safe(path: str, trust_unsafe: bool) -> None:
    if trust_unsafe:
        return
    meta = os.path.join(path, "keras_metadata.pb")
    if not os.path.exists(meta):
        return
    with open(meta, "rb") as f:
        blob = f.read()
    # keras_metadata.pb stores each layer's config as a JSON string; a regex over the bytes
    # finds Lambda layers without deserialising (or executing) anything.
    match = re.search(rb'"class_name":\s*"Lambda",\s*"config":\s*\{"name":\s*"([^"]*)"', blob)
    if match or re.search(rb'"class_name":\s*"Lambda"', blob):
        name = match.group(1).decode() if match else "?"
        raise errors.ModelLoadError(
            path,
            f"layer {name!r} is a Lambda layer, which holds Python code that would run on "
            f"loading; it was refused (safe mode). {_TRUST_HINT}",
        )


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


# -- the Keras 3 bridge ------------------------------------------------------------------
def _load_keras3(path: str, config: dict, trust_unsafe: bool) -> keras.Model:
    # Unsupported layers are reported from the stored config, before Keras 3 runs anything.
    for cls, name in _iter_layers(config):
        if cls not in BRIDGEABLE_LAYERS and cls not in _MODEL_CLASSES:
            raise errors.ModelLoadError(
                path,
                f"it was saved by Keras 3 and layer {name!r} of class {cls!r} cannot be rebuilt "
                f"in the framework's Keras (tf-keras); supported: {sorted(BRIDGEABLE_LAYERS)}",
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
        return _rebuild(k3, keras3, keras, to_keras3=False)
    except errors.UnsupportedModelError as e:
        raise errors.ModelLoadError(path, str(e)) from e


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
    if not _k3_has_graph(model3):
        raise errors.UnsupportedModelError(
            f"bridging a Keras 3 model to tf-keras needs the model's layer graph, but "
            f"{type(model3).__name__!r} is a subclassed keras.Model whose graph is hidden in "
            "Python code; rebuild it with the functional API (keras.Model(inputs, outputs)) "
            "or keras.Sequential"
        )
    import keras as keras3

    return _rebuild(model3, keras3, keras, to_keras3=False, trust_unsafe=trust_unsafe)


def _k3_has_graph(model3: Any) -> bool:
    """A Keras 3 functional model, or a Sequential that has been built (has a graph)."""
    if getattr(model3, "_functional", None) is not None:  # a built Sequential
        return True
    return hasattr(model3, "_nodes_by_depth") and hasattr(model3, "inputs")


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
    return _rebuild(model, keras, keras3, to_keras3=True)


def _unsupported(layer, to_keras3: bool, why: str = "") -> errors.UnsupportedModelError:
    """The error for a layer the bridge cannot rebuild: names it and says what to do."""
    cls_name = type(layer).__name__
    src, dst = ("tf-keras", "Keras 3") if to_keras3 else ("Keras 3", "tf-keras")
    remedy = (
        "replace it by standard Keras layers"
        if to_keras3
        else "build and save the model with tf-keras (import tf_keras as keras) instead, or "
        "replace it by standard Keras layers"
    )
    return errors.UnsupportedModelError(
        f"layer {layer.name!r} of class {cls_name!r} cannot be rebuilt from {src} in {dst}"
        f"{': ' + why if why else ''}; {remedy}. Bridged layers: "
        f"{', '.join(sorted(BRIDGEABLE_LAYERS))}"
    )


def _layer_config(layer, target, to_keras3: bool) -> tuple[type, dict]:
    cls_name = type(layer).__name__
    if cls_name not in BRIDGEABLE_LAYERS:
        raise _unsupported(layer, to_keras3)
    cls = getattr(target.layers, cls_name)
    cfg = _plain(layer.get_config())
    if isinstance(cfg.get("dtype"), dict):  # Keras 3 stores a DTypePolicy object
        cfg["dtype"] = cfg["dtype"].get("config", {}).get("name", "float32")
    # Keep only what the target class accepts: each Keras adds its own options (Keras 3's
    # lora_rank, tf-keras's batch_input_shape...), and the weights are copied anyway.
    params = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable", "dtype"}
    cfg = {k: v for k, v in cfg.items() if k in params}
    if cls_name == "BatchNormalization" and isinstance(cfg.get("axis"), list):
        # tf-keras stores BN's axis as a list, Keras 3 takes one int.
        if len(cfg["axis"]) != 1:
            raise errors.UnsupportedModelError(
                f"layer {layer.name!r} normalises over axes {cfg['axis']}; Keras 3 takes one axis"
            )
        cfg["axis"] = int(cfg["axis"][0])
    for key in list(cfg):
        # Initializers and constraints differ in options between the two Keras and do not
        # matter for a model whose weights are copied: the target class's defaults are used.
        if key.endswith(("_initializer", "_constraint")):
            del cfg[key]
        elif key.endswith("_regularizer") and cfg[key] is not None:
            cfg[key] = _regularizer(cfg[key])
    return cls, cfg


def _regularizer(conf: Any) -> dict | None:
    """Keeps L1/L2 penalties (same meaning in both Keras); other regularizers are dropped."""
    if isinstance(conf, dict) and conf.get("class_name") in ("L1", "L2", "L1L2"):
        values = {k: float(v) for k, v in conf.get("config", {}).items() if k in ("l1", "l2")}
        return {"class_name": conf["class_name"], "config": values}
    return None


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
    made: dict[int, Any] = {}  # id(source KerasTensor) -> target tensor
    graph = getattr(src, "_functional", None) or src  # a Keras 3 Sequential wraps a graph
    for layer, node in _nodes_in_order(src):
        if type(layer).__name__ == "InputLayer":
            t = _node_outputs(node)[0]
            dtype = getattr(t.dtype, "name", t.dtype)  # tf.DType in tf-keras, str in Keras 3
            made[id(t)] = dst.Input(batch_shape=tuple(t.shape), dtype=dtype, name=layer.name)
    inputs = [made[id(t)] for t in graph.inputs]
    new_layers = {}
    for layer, node in _nodes_in_order(src):
        if type(layer).__name__ == "InputLayer":
            continue
        if layer.name not in new_layers:
            if type(layer).__name__ == "Lambda":
                if not trust_unsafe:
                    raise errors.UnsupportedModelError(
                        f"layer {layer.name!r} is a Lambda layer, which holds Python code; "
                        f"it was refused (safe mode). {_TRUST_HINT}"
                    )
                # The same Python function is called on the other Keras's tensors.
                new_layers[layer.name] = dst.layers.Lambda(
                    layer.function, arguments=dict(layer.arguments or {}), name=layer.name
                )
            else:
                cls, cfg = _layer_config(layer, dst, to_keras3)
                new_layers[layer.name] = cls(**cfg)
        args = _node_inputs(node)
        missing = [a for a in args if id(a) not in made]
        if missing:
            raise errors.UnsupportedModelError(
                f"layer {layer.name!r} takes an input the bridge cannot trace"
            )
        call_in = [made[id(a)] for a in args]
        out = new_layers[layer.name](call_in if len(call_in) > 1 else call_in[0])
        outs = out if isinstance(out, list | tuple) else [out]
        for s, o in zip(_node_outputs(node), outs, strict=True):
            made[id(s)] = o
    outputs = [made[id(t)] for t in graph.outputs]
    model = dst.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=src.name,
    )
    for name, new in new_layers.items():
        weights = src.get_layer(name).get_weights()
        if weights:
            new.set_weights([np.asarray(w) for w in weights])
    return model


def _nodes_in_order(model):
    """``(layer, node)`` pairs of the model's own graph in topological order."""
    graph = getattr(model, "_functional", None) or model  # Keras 3 Sequential wraps one
    pairs = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            # tf-keras nodes name their layer `layer`, Keras 3 nodes `operation`.
            pairs.append((getattr(node, "operation", None) or node.layer, node))
    return pairs


def _node_inputs(node) -> list:
    if hasattr(node, "keras_inputs"):  # tf-keras
        return list(node.keras_inputs)
    return list(node.input_tensors)


def _node_outputs(node) -> list:
    out = node.outputs if hasattr(node, "outputs") else node.output_tensors
    return list(out) if isinstance(out, list | tuple) else [out]
