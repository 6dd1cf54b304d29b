"""Compact storage of a product-quantized model: packed codes, codebooks, float rest.

One ``.npz`` file (written atomically) holds everything needed to rebuild the decoded model,
in four arrays (few arrays, because every array in an ``.npz`` costs a few hundred bytes of
zip and ``.npy`` headers, more than a small layer's codes):

* ``codes``: every quantized layer's codes, each packed at exactly ``log2(k)`` bits
  (little-endian bit order, ``ceil(n * bits / 8)`` bytes per layer), concatenated (uint8);
* ``codebooks``: every codebook, flattened and concatenated (float16 or float32);
* ``floats``: every other weight -- biases, BatchNorm parameters and statistics, layers kept
  float -- flattened and concatenated (float32);
* ``header``: zlib-compressed JSON (uint8): format version, the model's architecture
  (``model.to_json()``), and per layer the offsets and shapes of its pieces.

So the three payload arrays hold exactly the compressed size the learner reports. No pickled
objects: the file loads with ``allow_pickle=False``. :func:`load` rebuilds the
architecture from the header (refusing ``Lambda`` layers, whose code a file should not be
trusted to carry) or decodes into a model you pass.

Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> inp = keras.Input((4,))
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(inp))
    >>> code = LayerCode("fc", (4, 2), np.ones((2, 2), "float16"), np.array([[0, 1], [1, 1]]))
    >>> apply_codes(m, {"fc": code})
    >>> path = save(os.path.join(tempfile.mkdtemp(), "m.pq.npz"), m, {"fc": code})
    >>> loaded, codes = load(path)
    >>> np.array_equal(loaded.get_layer("fc").get_weights()[0], m.get_layer("fc").get_weights()[0])
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from pocketflow_tf import atomic_io, errors
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.product_quant import pq

FORMAT = "pocketflow_tf.product_quant/1"


@dataclasses.dataclass
class LayerCode:
    """The product-quantized kernel of one layer.

    Attributes:
        name: Layer name.
        kernel_shape: The kernel's shape (``(kh, kw, c_in, O)`` or ``(c_in, O)``).
        codebook: ``(k, d)`` codewords, in their storage dtype (float16 or float32).
        codes: ``(m, O)`` integer codeword index of every sub-vector.

    Example:
        >>> c = LayerCode("fc", (4, 2), np.zeros((4, 2), "float16"), np.zeros((2, 2), int))
        >>> c.code_bits, c.block_size, c.decode().shape
        (2, 2, (4, 2))
    """

    name: str
    kernel_shape: tuple[int, ...]
    codebook: np.ndarray
    codes: np.ndarray

    @property
    def codebook_size(self) -> int:
        """``k``, the number of codewords."""
        return int(self.codebook.shape[0])

    @property
    def block_size(self) -> int:
        """``d``, the sub-vector length."""
        return int(self.codebook.shape[1])

    @property
    def code_bits(self) -> int:
        """Bits per code, ``log2(k)``."""
        return int(self.codebook_size).bit_length() - 1

    def decode(self) -> np.ndarray:
        """The float32 kernel ``codebook[codes]``.

        Example:
            >>> LayerCode("fc", (2, 1), np.array([[1.0, 2.0]]), np.zeros((1, 1), int)).decode().ravel().tolist()
            [1.0, 2.0]
        """
        return pq.decode(self.codebook.astype(np.float32), self.codes, self.kernel_shape)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packs non-negative integer codes at ``bits`` bits each into a uint8 array.

    Example:
        >>> pack_codes(np.array([1, 2, 3, 0]), 2).tolist()  # 01 10 11 00, little-endian
        [57]
    """
    flat = np.asarray(codes, dtype=np.uint32).ravel()
    if flat.size and int(flat.max()) >> bits:
        raise ValueError(f"a code ({int(flat.max())}) does not fit in {bits} bits")
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint32)) & 1
    return np.packbits(planes.astype(np.uint8).ravel(), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_codes` (int64 codes of ``shape``).

    Example:
        >>> unpack_codes(np.array([57], np.uint8), 2, (4,)).tolist()
        [1, 2, 3, 0]
    """
    n = int(np.prod(shape))
    planes = np.unpackbits(np.asarray(packed, np.uint8), count=n * bits, bitorder="little")
    planes = planes.reshape(n, bits).astype(np.int64)
    return (planes << np.arange(bits)).sum(axis=1).reshape(shape)


def apply_codes(model: keras.Model, codes: Mapping[str, LayerCode]) -> None:
    """Writes every decoded kernel into ``model`` (in place; other weights untouched).

    Example:
        >>> inp = keras.Input((2,))
        >>> m = keras.Model(inp, keras.layers.Dense(1, name="fc", use_bias=False)(inp))
        >>> apply_codes(m, {"fc": LayerCode("fc", (2, 1), np.array([[3.0, 4.0]]), np.zeros((1, 1), int))})
        >>> m.get_layer("fc").get_weights()[0].ravel().tolist()
        [3.0, 4.0]
    """
    for name, code in codes.items():
        layer = model.get_layer(name)
        layer.kernel.assign(code.decode())


def save(path: str | os.PathLike, model: keras.Model, codes: Mapping[str, LayerCode]) -> str:
    """Writes ``codes`` and the rest of ``model``'s weights to ``path`` (``.npz``) atomically.

    Args:
        path: Destination file (conventionally ``*.pq.npz``).
        model: The decoded model (its quantized kernels are not stored, only their codes).
        codes: The :class:`LayerCode` of every quantized layer.

    Returns:
        ``path``.

    Example:
        >>> save("/tmp/m.pq.npz", decoded_model, learner.codes)  # doctest: +SKIP
        '/tmp/m.pq.npz'
    """
    dtypes = {np.asarray(c.codebook).dtype for c in codes.values()}
    if len(dtypes) > 1:
        raise ValueError(f"codebooks of one model share a dtype; got {sorted(map(str, dtypes))}")
    cb_dtype = dtypes.pop() if dtypes else np.dtype(np.float16)
    packed, books, floats = [], [], []
    offsets = {"codes": 0, "codebooks": 0, "floats": 0}
    entries = []
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        entry: dict[str, Any] = {"name": layer.name, "weights": []}
        skip = None
        if layer.name in codes:
            code = codes[layer.name]
            skip = 0  # Conv2D and Dense list their kernel first
            bits = pack_codes(code.codes, code.code_bits)
            book = np.asarray(code.codebook, dtype=cb_dtype).ravel()
            entry.update(
                kernel_shape=list(code.kernel_shape),
                codes_shape=list(code.codes.shape),
                code_bits=code.code_bits,
                codes_at=[offsets["codes"], bits.size],
                codebook_shape=list(code.codebook.shape),
                codebook_at=offsets["codebooks"],
            )
            packed.append(bits)
            books.append(book)
            offsets["codes"] += bits.size
            offsets["codebooks"] += book.size
        for wi, w in enumerate(weights):
            if wi == skip:
                entry["weights"].append(None)
                continue
            flat = np.asarray(w, dtype=np.float32).ravel()
            entry["weights"].append([offsets["floats"], list(np.shape(w))])
            floats.append(flat)
            offsets["floats"] += flat.size
        entries.append(entry)
    header = {
        "format": FORMAT,
        "model": model.to_json(),
        "codebook_dtype": str(cb_dtype),
        "layers": entries,
    }
    arrays = {
        "codes": np.concatenate(packed) if packed else np.zeros(0, np.uint8),
        "codebooks": np.concatenate(books) if books else np.zeros(0, cb_dtype),
        "floats": np.concatenate(floats) if floats else np.zeros(0, np.float32),
        "header": np.frombuffer(zlib.compress(json.dumps(header).encode(), 9), np.uint8),
    }
    with atomic_io.atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:  # a file object: numpy would append ".npz" to a name
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
    return os.fspath(path)


#: The arrays of a file and their accepted dtypes.
_ARRAYS = {
    "codes": ("uint8",),
    "codebooks": ("float16", "float32"),
    "floats": ("float32",),
    "header": ("uint8",),
}


def _read_arrays(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    # The four arrays and the parsed header; anything unreadable is a ModelLoadError.
    try:
        with np.load(path, allow_pickle=False) as data:
            if "header" not in data.files:
                raise errors.ModelLoadError(
                    str(path), "not a product-quantization file (no header)"
                )
            arrays = {}
            for name, dtypes in _ARRAYS.items():
                if name not in data.files:
                    raise errors.ModelLoadError(str(path), f"no '{name}' array")
                arrays[name] = data[name]
                if arrays[name].ndim != 1 or str(arrays[name].dtype) not in dtypes:
                    raise errors.ModelLoadError(
                        str(path),
                        f"array '{name}' is {arrays[name].dtype} {arrays[name].shape}, "
                        f"expected a flat {' or '.join(dtypes)} array",
                    )
    except errors.ModelLoadError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # np.load reports a truncated or garbled file with any of these.
        raise errors.ModelLoadError(str(path), f"unreadable ({type(e).__name__}: {e})") from None
    try:
        header = json.loads(zlib.decompress(arrays["header"].tobytes()))
    except (zlib.error, ValueError) as e:
        raise errors.ModelLoadError(str(path), f"unreadable header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else header
        raise errors.ModelLoadError(str(path), f"format {got!r}, expected {FORMAT!r}")
    return arrays["codes"], arrays["codebooks"], arrays["floats"], header


def _slice(path, what: str, array: np.ndarray, start, shape) -> np.ndarray:
    # array[start : start + prod(shape)] reshaped, refusing a range outside the array (NumPy
    # would silently return a shorter slice).
    n = int(np.prod(shape))
    if not (isinstance(start, int) and 0 <= start and start + n <= array.size):
        raise errors.ModelLoadError(
            str(path),
            f"'{what}' range {start}..+{n} lies outside the stored array of {array.size} values",
        )
    return array[start : start + n].reshape(shape)


def _read_code(path, entry: dict, packed: np.ndarray, books: np.ndarray) -> LayerCode:
    # One layer's LayerCode, its ranges checked against the arrays.
    at, size = entry["codes_at"]
    bits, codes_shape = int(entry["code_bits"]), tuple(entry["codes_shape"])
    shape = tuple(entry["codebook_shape"])
    if not 1 <= bits <= 16 or shape[0] != 2**bits:
        raise errors.ModelLoadError(
            str(path),
            f"layer {entry['name']}: {bits}-bit codes for a codebook of shape {shape}",
        )
    if size != -(-int(np.prod(codes_shape)) * bits // 8):
        raise errors.ModelLoadError(
            str(path),
            f"layer {entry['name']}: {size} code bytes for {codes_shape} codes of {bits} bits",
        )
    return LayerCode(
        entry["name"],
        tuple(entry["kernel_shape"]),
        _slice(path, "codebooks", books, entry["codebook_at"], shape).copy(),
        unpack_codes(_slice(path, "codes", packed, at, (size,)), bits, codes_shape),
    )


def load(
    path: str | os.PathLike,
    model: keras.Model | None = None,
    custom_objects: Mapping[str, Any] | None = None,
) -> tuple[keras.Model, dict[str, LayerCode]]:
    """Reads a file written by :func:`save`; returns the decoded model and the codes.

    Args:
        path: The ``.npz`` file.
        model: A model of the same architecture to decode into (a copy is made); ``None``
            rebuilds it from the stored architecture.
        custom_objects: Passed to ``keras.models.model_from_json`` for custom layers.

    Example:
        >>> model, codes = load("/tmp/m.pq.npz")  # doctest: +SKIP
    """
    packed, books, floats, header = _read_arrays(path)
    try:
        if model is None:
            if '"class_name": "Lambda"' in header["model"]:
                raise errors.ModelLoadError(
                    str(path),
                    "the stored architecture has Lambda layers (Python code); pass the model "
                    "to decode into as `model=`",
                )
            out = keras.models.model_from_json(header["model"], custom_objects=custom_objects)
        else:
            out = keras.models.clone_model(model)
        codes: dict[str, LayerCode] = {}
        for entry in header["layers"]:
            layer = out.get_layer(entry["name"])
            kernel = None
            if "kernel_shape" in entry:
                code = _read_code(path, entry, packed, books)
                codes[code.name] = code
                kernel = code.decode()
            weights = []
            for spec in entry["weights"]:
                if spec is None:
                    weights.append(kernel)
                    continue
                at, shape = spec
                weights.append(_slice(path, "floats", floats, at, shape))
            layer.set_weights(weights)
    except errors.ModelLoadError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        # A header that parses but does not fit the stored arrays or the architecture:
        # corruption, or a file edited by hand. Keras' own message says which layer/shape.
        raise errors.ModelLoadError(
            str(path), f"the header does not fit its arrays or model ({type(e).__name__}: {e})"
        ) from None
    return out, codes
