"""Data sets: Fashion-MNIST (Debian package), CIFAR-10 (user folder), user arrays and tf.data.

Every loader returns a :class:`DataSplits` of float32 NHWC images scaled to ``[0, 1]`` and
int64 labels. Normalisation (mean/std) is a layer inside the nets' models, so the arrays that
train a model are exactly the arrays a TFLite export is verified and calibrated on: there is
one preprocessing, not two that may drift apart.

Nothing is ever downloaded. Fashion-MNIST comes from Debian's ``dataset-fashion-mnist``
(``apt-get install -y dataset-fashion-mnist``) or a folder holding the same IDX ``.gz`` files.

Example:
    >>> from pocketflow_tf import datasets
    >>> data = datasets.load_dataset("fmnist")  # doctest: +SKIP
    >>> data.x_train.shape, data.num_classes  # doctest: +SKIP
    ((60000, 28, 28, 1), 10)
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from collections.abc import Callable

import numpy as np

from pocketflow_tf import errors, inputs, safe_pickle

#: Where Debian's ``dataset-fashion-mnist`` package puts its files.
FMNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FMNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclasses.dataclass
class DataSplits:
    """Train / validation / test arrays of one data set.

    Attributes:
        name: Data set name, e.g. ``"fmnist"``.
        x_train: float32 images ``(N, H, W, C)`` in ``[0, 1]``.
        y_train: int64 labels ``(N,)``.
        x_test: Test images; never used by searches.
        y_test: Test labels.
        num_classes: Number of classes.
        x_val: Validation images (``None`` until :meth:`with_validation` carves them from
            the training data, or until the caller gives its own).
        y_val: Validation labels.
        val_from_training: True when ``x_val`` was carved from the training images
            (:meth:`with_validation`): a model trained on them scores high there, so figures
            measured on it are biased (the automated search says so in its report).

    Example:
        >>> import numpy as np
        >>> d = DataSplits("toy", np.zeros((10, 4, 4, 1), "float32"), np.arange(10) % 2,
        ...                np.zeros((4, 4, 4, 1), "float32"), np.arange(4) % 2, 2)
        >>> d.with_validation(0.2, seed=0).x_val.shape
        (2, 4, 4, 1)
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    val_from_training: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, ``(H, W, C)``."""
        return tuple(self.x_train.shape[1:])

    def with_validation(self, fraction: float, seed: int = 0) -> DataSplits:
        """Returns a copy whose validation split is carved from the *training* data.

        Searches tune on this split and never see the test set. The split is stratified
        per class and fixed by ``seed``.

        Args:
            fraction: Share of the training data to hold out, in ``(0, 1)``.
            seed: Seed of the split.

        Returns:
            A new :class:`DataSplits` with smaller train arrays and ``x_val``/``y_val`` set.

        Example:
            >>> import numpy as np
            >>> d = from_arrays(np.zeros((100, 2, 2, 1)), np.arange(100) % 10)
            >>> v = d.with_validation(0.1)
            >>> len(v.x_train), len(v.x_val), v.val_from_training
            (90, 10, True)
        """
        if not 0.0 < float(fraction) < 1.0:
            raise errors.InvalidArgumentError("fraction", fraction, "a number in (0, 1)")
        rng = np.random.default_rng(seed)
        val_idx = []
        for cls in np.unique(self.y_train):
            idx = np.flatnonzero(self.y_train == cls)
            rng.shuffle(idx)
            val_idx.append(idx[: int(round(len(idx) * fraction))])
        val_idx = np.sort(np.concatenate(val_idx))
        mask = np.ones(len(self.y_train), bool)
        mask[val_idx] = False
        if not mask.any() or not (~mask).any():
            raise errors.InvalidArgumentError(
                "fraction",
                fraction,
                f"a share leaving both splits non-empty for {len(mask)} samples",
            )
        return dataclasses.replace(
            self,
            x_train=self.x_train[mask],
            y_train=self.y_train[mask],
            x_val=self.x_train[val_idx],
            y_val=self.y_train[val_idx],
            val_from_training=True,
        )

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> DataSplits:
        """Returns a copy with at most ``n_train`` training and ``n_test`` test samples.

        Example:
            >>> import numpy as np
            >>> from_arrays(np.zeros((8, 2, 2, 1)), np.arange(8) % 2).subset(4).x_train.shape
            (4, 2, 2, 1)
        """
        return dataclasses.replace(
            self,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test],
        )


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or not.

    Args:
        path: Path to a ``*-ubyte`` or ``*-ubyte.gz`` file.

    Returns:
        The array with the shape and dtype stored in the header.

    Raises:
        DataError: If the header or the payload size is wrong.

    Example:
        >>> x = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        (10000,)
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise errors.DataError(f"Cannot read IDX file '{path}': {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise errors.DataError(f"'{path}' is not an IDX file (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    payload = raw[4 + 4 * ndim :]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(payload) != expected:
        raise errors.DataError(
            f"IDX file '{path}' is truncated or padded: header says {dims} "
            f"({expected} bytes), payload has {len(payload)} bytes"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(dims)


def load_fashion_mnist(data_dir: str | None = None) -> DataSplits:
    """Loads Fashion-MNIST (60k train / 10k test, 28x28x1) from IDX ``.gz`` files.

    Args:
        data_dir: Folder with the four IDX files; defaults to Debian's package folder.

    Raises:
        DataError: If the folder or a file is missing, naming how to get it.

    Example:
        >>> d = load_fashion_mnist()  # doctest: +SKIP
        >>> d.x_test.shape  # doctest: +SKIP
        (10000, 28, 28, 1)
    """
    folder = data_dir or FMNIST_DEBIAN_DIR
    arrays = {}
    for key, fname in _FMNIST_FILES.items():
        path = os.path.join(folder, fname)
        if not os.path.exists(path) and os.path.exists(path[:-3]):
            path = path[:-3]  # uncompressed copies are accepted too
        if not os.path.exists(path):
            raise errors.DataError(
                f"Fashion-MNIST file '{path}' not found. Install Debian's package "
                "(`apt-get install -y dataset-fashion-mnist`) or pass --data_dir with the "
                f"four IDX files ({', '.join(_FMNIST_FILES.values())})."
            )
        arrays[key] = read_idx(path)
    return _finish("fmnist", arrays, num_classes=10)


def load_cifar10(data_dir: str) -> DataSplits:
    """Loads CIFAR-10 from a user folder, python-pickle or binary format.

    Accepted layouts: the folder itself or its ``cifar-10-batches-py`` / ``cifar-10-batches-bin``
    sub-folder, holding ``data_batch_1..5`` + ``test_batch`` (pickle) or
    ``data_batch_1..5.bin`` + ``test_batch.bin`` (binary: 1 label byte + 3072 pixel bytes, CHW).

    Args:
        data_dir: Folder given by the user (nothing is downloaded).

    Example:
        >>> d = load_cifar10("/data/cifar10")  # doctest: +SKIP
        >>> d.x_train.shape  # doctest: +SKIP
        (50000, 32, 32, 3)
    """
    if not data_dir:
        raise errors.InvalidArgumentError(
            "data_dir", data_dir, "a folder holding CIFAR-10 (python or binary format)"
        )
    for sub in ("", "cifar-10-batches-py", "cifar-10-batches-bin"):
        folder = os.path.join(data_dir, sub)
        if os.path.exists(os.path.join(folder, "test_batch")):
            return _finish("cifar10", _cifar_pickle(folder), num_classes=10)
        if os.path.exists(os.path.join(folder, "test_batch.bin")):
            return _finish("cifar10", _cifar_binary(folder), num_classes=10)
    raise errors.DataError(
        f"No CIFAR-10 found in '{data_dir}': expected data_batch_1..5 and test_batch "
        "(python format) or data_batch_1..5.bin and test_batch.bin (binary format)."
    )


#: Pixels of one CIFAR-10 image (3 x 32 x 32).
_CIFAR_PIXELS = 3 * 32 * 32


def _batch_files(folder: str, ext: str) -> list[str]:
    files = [os.path.join(folder, f"data_batch_{i}{ext}") for i in range(1, 6)]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise errors.DataError(f"CIFAR-10 folder '{folder}' is incomplete: missing {missing}")
    return files


def _cifar_pickle(folder: str) -> dict:
    def read(path):
        # A data folder is untrusted: the restricted unpickler rebuilds plain values and
        # numeric arrays only, so a crafted batch file cannot run code.
        batch = safe_pickle.load(path, encoding="bytes")
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise errors.DataError(
                f"CIFAR-10 batch '{path}' is not in the python format: expected a dict with "
                f"b'data' and b'labels', found {keys}"
            )
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
        if data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS or len(labels) != len(data):
            raise errors.DataError(
                f"CIFAR-10 batch '{path}' has data of shape {data.shape} and "
                f"{len(labels)} labels; expected (N, {_CIFAR_PIXELS}) uint8 rows "
                "(3x32x32, channels first) and N labels"
            )
        if data.dtype != np.uint8:
            raise errors.DataError(
                f"CIFAR-10 batch '{path}' holds {data.dtype} pixels; expected uint8"
            )
        if labels.dtype.kind not in "iu":
            raise errors.DataError(
                f"CIFAR-10 batch '{path}' holds {labels.dtype} labels; expected integers"
            )
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)

    return _cifar_splits(folder, "", read)


def _cifar_binary(folder: str) -> dict:
    record = 1 + _CIFAR_PIXELS

    def read(path):
        raw = np.fromfile(path, np.uint8)
        if raw.size % record:
            raise errors.DataError(
                f"CIFAR-10 binary batch '{path}' is truncated: {raw.size} bytes is not a "
                f"multiple of the {record}-byte record"
            )
        raw = raw.reshape(-1, record)
        return raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), raw[:, 0].astype(np.int64)

    return _cifar_splits(folder, ".bin", read)


def _cifar_splits(folder: str, ext: str, read: Callable[[str], tuple]) -> dict:
    """The train batches and the test batch of either CIFAR-10 format, read with ``read``."""
    train = [read(p) for p in _batch_files(folder, ext)]
    x_test, y_test = read(os.path.join(folder, "test_batch" + ext))
    return {
        "x_train": np.concatenate([t[0] for t in train]),
        "y_train": np.concatenate([t[1] for t in train]),
        "x_test": x_test,
        "y_test": y_test,
    }


def _finish(name: str, arrays: dict, num_classes: int) -> DataSplits:
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise errors.DataError(
                f"{name} {split}: images and labels differ in length: {len(x)} vs {len(y)}"
            )
        if x.ndim == 3:
            x = x[..., None]
        if len(x) == 0:  # an empty test split is allowed (from_arrays without a test set)
            out[f"x_{split}"], out[f"y_{split}"] = _to_float(x), np.asarray(y, np.int64)
            continue
        # The input contract (finite images, labels in range) holds for every loaded set:
        # a CIFAR label 42 must not become a meaningless accuracy.
        out[f"x_{split}"] = inputs.images(x, name=f"{name} {split} images")
        out[f"y_{split}"] = inputs.labels(
            y, name=f"{name} {split} labels", num_classes=num_classes, n=len(x)
        )
    return DataSplits(name=name, num_classes=num_classes, **out)


def _to_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return np.asarray(x, np.float32)


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    name: str = "user",
    num_classes: int | None = None,
) -> DataSplits:
    """Wraps user numpy arrays (uint8 images are scaled to ``[0, 1]``).

    Args:
        x_train: Images ``(N, H, W)`` or ``(N, H, W, C)``.
        y_train: Integer labels ``(N,)``.
        x_test: Optional test images (defaults to an empty split).
        y_test: Optional test labels.
        name: Name used in records.
        num_classes: Defaults to ``max(label) + 1``.

    Example:
        >>> import numpy as np
        >>> d = from_arrays(np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 2, 1]))
        >>> d.x_train.shape, d.num_classes
        ((4, 8, 8, 1), 3)
    """
    if x_test is None:
        x_test, y_test = x_train[:0], y_train[:0]
    if (x_test is None) != (y_test is None):
        raise errors.InvalidArgumentError("y_test", y_test, "labels given together with x_test")
    if num_classes is None:
        # Checked first: string or soft labels have no maximum to count classes by.
        y_train = inputs.labels(y_train, name="y_train", n=len(x_train))
        y_test = inputs.labels(y_test, name="y_test", n=len(x_test))
        num_classes = int(max(np.max(y_train), np.max(y_test) if len(y_test) else 0)) + 1
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    return _finish(name, arrays, num_classes=num_classes)


#: Loaders by data set name; a loader takes ``data_dir``.
LOADERS = {"fmnist": load_fashion_mnist, "cifar10": load_cifar10}


def load_dataset(name: str, data_dir: str | None = None) -> DataSplits:
    """Loads a data set by name: ``"fmnist"`` or ``"cifar10"``.

    Example:
        >>> load_dataset("mnist")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `dataset`: 'mnist'. Accepted: one of ['cifar10', 'fmnist'].
    """
    if name not in LOADERS:
        raise errors.InvalidArgumentError("dataset", name, f"one of {sorted(LOADERS)}")
    return LOADERS[name](data_dir)
