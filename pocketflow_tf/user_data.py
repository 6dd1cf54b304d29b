"""The user's own data: image folders (one sub-folder per class) and ``.npz`` array files.

Two forms, each checked before any work so that a bad file ends in one clear error naming it:

* **An image folder** ``DIR/<class>/<image>``, read exactly as
  ``keras.utils.image_dataset_from_directory`` reads it (tf-keras's own function: classes are
  the sub-folders in name order, images ``.bmp .gif .jpeg .jpg .png`` anywhere below them,
  resized to the model's input size). It is *streamed* as a batched ``tf.data.Dataset`` of
  ``(images, labels)``, never loaded whole; :meth:`ImageFolderData.to_arrays` materialises it
  for the consumers that take arrays only (``compress``), under a stated size limit.
  :func:`scan_image_folder` checks it up front: at least two classes, no empty class, and
  every image readable (its header, or a full decode of each file with a progress line).
* **An .npz file** holding ``x_train, y_train[, x_test, y_test]``, read with
  ``allow_pickle=False`` (an array of Python objects is code, and refused).

The scale the model expects is *stated*, never guessed: ``input_scale`` is ``"0..1"``,
``"0..255"`` or ``"-1..1"``. Pixels (an image folder, a ``uint8`` array) are mapped onto it,
and it is required for them; float arrays are taken as they are and, when a scale is stated,
checked to lie in it.

Example:
    >>> from pocketflow_tf import user_data
    >>> data = user_data.from_image_folder("photos/", image_size=(96, 96), channels=3,
    ...                                    input_scale="-1..1")  # doctest: +SKIP
    >>> data.class_names, data.num_train, data.num_val  # doctest: +SKIP
    (['cat', 'dog'], 1800, 200)
    >>> splits = user_data.from_npz("mine.npz", input_scale="0..1")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import zipfile
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from pocketflow_tf import datasets, errors, records

#: The scales a model may expect its input in, as (low, high).
INPUT_SCALES: dict[str, tuple[float, float]] = {
    "0..1": (0.0, 1.0),
    "0..255": (0.0, 255.0),
    "-1..1": (-1.0, 1.0),
}
#: Image file endings keras's image_dataset_from_directory reads (case-insensitive).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
#: How :func:`scan_image_folder` checks each image: decode it, read its header, or not at all.
CHECKS = ("full", "header", "none")
#: Default limit of :meth:`ImageFolderData.to_arrays` (float32 bytes held in memory).
DEFAULT_MAX_BYTES = 4 * 2**30

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def input_scale_range(input_scale: str) -> tuple[float, float]:
    """``(low, high)`` of a stated input scale.

    Raises:
        InvalidArgumentError: An unknown scale (echoed).

    Example:
        >>> input_scale_range("-1..1")
        (-1.0, 1.0)
        >>> input_scale_range("0-1")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `input_scale`: '0-1'. Accepted: one of 0..1, 0..255, -1..1 (the value range your model expects its input pixels in).
    """
    if input_scale not in INPUT_SCALES:
        raise errors.InvalidArgumentError(
            "input_scale",
            input_scale,
            f"one of {', '.join(INPUT_SCALES)} (the value range your model expects its input "
            "pixels in)",
        )
    return INPUT_SCALES[input_scale]


def pixels_to_scale(x: Any, input_scale: str) -> Any:
    """Maps pixel values 0..255 (numpy or tf, any float or uint8) onto ``input_scale`` (float32).

    Example:
        >>> pixels_to_scale(np.array([0, 255], np.uint8), "-1..1")
        array([-1.,  1.], dtype=float32)
    """
    lo, hi = input_scale_range(input_scale)
    if isinstance(x, np.ndarray):
        return (x.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)).astype(
            np.float32
        )
    from pocketflow_tf.compat import tf

    return tf.cast(x, tf.float32) * ((hi - lo) / 255.0) + lo


@dataclasses.dataclass
class ImageFolder:
    """What :func:`scan_image_folder` found in an image folder.

    Attributes:
        directory: The folder.
        class_names: Its class sub-folders, in name order (label ``i`` is ``class_names[i]``).
        files: The image files, class by class.
        labels: The class index of each file.

    Example:
        >>> ImageFolder("d", ["a", "b"], ["d/a/1.png", "d/b/2.png"], [0, 1]).counts
        {'a': 1, 'b': 1}
    """

    directory: str
    class_names: list[str]
    files: list[str]
    labels: list[int]

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    @property
    def counts(self) -> dict[str, int]:
        """Images per class."""
        return {c: self.labels.count(i) for i, c in enumerate(self.class_names)}


def scan_image_folder(
    directory: str | os.PathLike,
    *,
    check: str = "full",
    name: str = "data",
    stream: IO[str] | None = sys.stderr,
    channels: int | None = None,
) -> ImageFolder:
    """Lists an image folder as keras reads it and checks it before any work.

    Args:
        directory: ``DIR`` holding one sub-folder per class.
        check: ``"full"`` decodes every image once (with a progress line on ``stream``;
            measured 0.7 ms per 160x160 JPEG on 2 cores, about one streamed epoch),
            ``"header"`` reads each file's first bytes only (catches wrong and empty
            files, not truncated ones), ``"none"`` skips the check.
        name: The argument the folder came from (echoed in errors).
        stream: Where the progress line goes (``None``: silent).
        channels: The channels the images will be read with (1, 3 or 4, as keras's
            ``color_mode``): the full check decodes each image so, since some images
            decode only in some modes (a CMYK JPEG is refused as grayscale).

    Returns:
        The :class:`ImageFolder`.

    Raises:
        InvalidArgumentError: Not a folder, fewer than two classes, a class without images,
            or an unknown ``check``.
        DataError: An unreadable image, naming the first bad file.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp(); os.makedirs(os.path.join(d, "only_class"))
        >>> scan_image_folder(d)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `data`: '...'. Accepted: an image folder with one sub-folder per class and at least 2 classes (found 1: ['only_class']).
    """
    directory = os.fspath(directory)
    if check not in CHECKS:
        raise errors.InvalidArgumentError("check_images", check, f"one of {CHECKS}")
    if not os.path.isdir(directory):
        raise errors.InvalidArgumentError(
            name, directory, "an existing image folder with one sub-folder per class"
        )
    # As keras: the class folders in name order, hidden ones (".ipynb_checkpoints", ".git")
    # skipped, images anywhere below them.
    class_names = sorted(
        e
        for e in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, e)) and not e.startswith(".")
    )
    if len(class_names) < 2:
        raise errors.InvalidArgumentError(
            name,
            directory,
            "an image folder with one sub-folder per class and at least 2 classes "
            f"(found {len(class_names)}: {class_names})",
        )
    files, labels = [], []
    for label, cls in enumerate(class_names):
        found = _images_below(os.path.join(directory, cls), name, directory)
        if not found:
            raise errors.InvalidArgumentError(
                name,
                directory,
                f"at least one image ({', '.join(IMAGE_EXTENSIONS)}) in every class folder; "
                f"'{os.path.join(directory, cls)}' has none",
            )
        files += found
        labels += [label] * len(found)
    folder = ImageFolder(directory, class_names, files, labels)
    check_files(files, check, stream, channels=channels)
    return folder


def _images_below(top: str, name: str, directory: str) -> list[str]:
    """The image files below ``top`` in the order keras reads them.

    keras walks with ``tf.io.gfile.walk``, which follows symbolic links to folders, and sorts
    by folder path, then by file name: listing the same files is what keeps the counts, the
    shards and the check of every image true. A link leading back to a folder above it
    would make keras walk forever, so it is refused.
    """
    per_folder: list[tuple[str, list[str]]] = []

    def visit(folder: str, above: tuple[str, ...]) -> None:
        real = os.path.realpath(folder)
        if real in above:
            raise errors.InvalidArgumentError(
                name,
                directory,
                f"an image folder without symbolic-link loops; '{folder}' leads back to "
                f"'{real}', above it",
            )
        entries = sorted(os.listdir(folder))
        paths = [os.path.join(folder, e) for e in entries]
        per_folder.append(
            (
                folder,
                [p for p in paths if not os.path.isdir(p) and p.lower().endswith(IMAGE_EXTENSIONS)],
            )
        )
        for p in paths:
            if os.path.isdir(p):
                visit(p, (*above, real))

    visit(top, ())
    return [f for _, files in sorted(per_folder, key=lambda item: item[0]) for f in files]


def check_files(
    files: Sequence[str],
    check: str = "full",
    stream: IO[str] | None = sys.stderr,
    *,
    channels: int | None = None,
) -> None:
    """Checks image files as :func:`scan_image_folder` does (e.g. one worker's shard only).

    Args:
        files: The image files.
        check: ``"full"`` (decode each), ``"header"`` (first bytes) or ``"none"``.
        stream: Where the progress line of a full check goes.

    Raises:
        InvalidArgumentError: An unknown ``check``.
        DataError: An unreadable image, naming the first bad file.

    Example:
        >>> check_files([], "header")
    """
    if check not in CHECKS:
        raise errors.InvalidArgumentError("check_images", check, f"one of {CHECKS}")
    if check == "header":
        for path in files:
            _check_header(path)
    elif check == "full":
        _decode_all(files, stream, channels)


def _check_header(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise errors.DataError(f"cannot read image '{path}': {e.strerror or e}") from None
    if not any(head.startswith(magic) for magic in _MAGIC):
        raise errors.DataError(
            f"cannot read image '{path}': not a PNG, JPEG, GIF or BMP file (it starts with "
            f"{head!r}); remove it or move it out of the folder"
        )


def _decode_all(files: Sequence[str], stream: IO[str] | None, channels: int | None) -> None:
    from pocketflow_tf.compat import tf

    with records.ProgressBar(len(files), "checking images", stream=stream, every_s=5.0) as bar:
        for path in files:
            _check_header(path)  # the clearer message for a file of another kind
            try:
                image = tf.io.decode_image(
                    tf.io.read_file(path), channels=channels or 0, expand_animations=False
                )
            except (tf.errors.OpError, ValueError) as e:
                reason = " ".join(str(getattr(e, "message", e)).split())
                # TensorFlow's wrapping ({{function_node ...}}, [Op:...]) says nothing here.
                reason = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:.*$", "", reason)[:200]
                mode = f" with {channels} channel(s), as the model reads it" if channels else ""
                raise errors.DataError(
                    f"cannot read image '{path}'{mode}: {reason}; remove it or move it out of "
                    "the folder"
                ) from None
            if 0 in image.shape:
                raise errors.DataError(f"cannot read image '{path}': it has no pixels")
            bar.update()


@dataclasses.dataclass
class ImageFolderData:
    """An image folder streamed as batched ``tf.data`` datasets of ``(images, labels)``.

    Images are float32 in ``input_scale``, shaped ``(batch, H, W, C)``; labels int32 class
    indices.

    Attributes:
        folder: What :func:`scan_image_folder` found.
        train: The training split, reshuffled each epoch.
        val: The held-out split (``validation_split`` of the folder), or ``None``.
        num_train: Images in ``train``.
        num_val: Images in ``val``.
        image_shape: ``(H, W, C)``.
        input_scale: The scale of the images.

    Example:
        >>> data = from_image_folder("photos/", image_size=(32, 32), channels=3,
        ...                          input_scale="0..1")  # doctest: +SKIP
        >>> x_train, y_train = data.to_arrays("train")  # doctest: +SKIP
    """

    folder: ImageFolder
    train: Any
    val: Any
    num_train: int
    num_val: int
    image_shape: tuple[int, int, int]
    input_scale: str

    @property
    def class_names(self) -> list[str]:
        """The classes, label ``i`` being ``class_names[i]``."""
        return self.folder.class_names

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return self.folder.num_classes

    def array_bytes(self, split: str = "train") -> int:
        """Bytes :meth:`to_arrays` would hold for ``split`` (float32 images).

        Example:
            >>> d = ImageFolderData(None, None, None, 1000, 100, (32, 32, 3), "0..1")
            >>> d.array_bytes("train")
            12288000
        """
        n = self.num_train if split == "train" else self.num_val
        return n * int(np.prod(self.image_shape)) * 4

    def to_arrays(
        self, split: str = "train", *, max_bytes: int | None = DEFAULT_MAX_BYTES
    ) -> tuple[np.ndarray, np.ndarray]:
        """Materialises one split as ``(images float32, labels int64)`` arrays.

        For consumers that take arrays only (automated compression: its held-out scoring,
        calibration and latency probes index samples directly). The folder is read once,
        in the order of the split.

        Args:
            split: ``"train"`` or ``"val"``.
            max_bytes: Refuse when the float32 images would exceed this (``None``: no limit).

        Raises:
            InvalidArgumentError: An unknown or empty split, or one over ``max_bytes``.

        Example:
            >>> d = ImageFolderData(None, None, None, 10**6, 0, (224, 224, 3), "0..1")
            >>> d.to_arrays("train", max_bytes=2**30)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `max_data_mb`: 1024. Accepted: at least 574219 MB to hold the 1000000 train images of 224x224x3 as float32 arrays (raise the limit, or use a learner that streams the folder: pocketflow-tf learn).
        """
        if split not in ("train", "val"):
            raise errors.InvalidArgumentError("split", split, "'train' or 'val'")
        need = self.array_bytes(split)
        if max_bytes is not None and need > max_bytes:
            n = self.num_train if split == "train" else self.num_val
            raise errors.InvalidArgumentError(
                "max_data_mb",
                int(max_bytes // 2**20),
                f"at least {-(-need // 2**20)} MB to hold the {n} {split} images of "
                f"{'x'.join(map(str, self.image_shape))} as float32 arrays (raise the limit, "
                "or use a learner that streams the folder: pocketflow-tf learn)",
            )
        ds = self.train if split == "train" else self.val
        if ds is None:
            raise errors.InvalidArgumentError("split", split, "a split the folder was divided into")
        xs, ys = [], []
        for xb, yb in ds:
            xs.append(xb.numpy())
            ys.append(yb.numpy())
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


_CHANNELS = {1: "grayscale", 3: "rgb", 4: "rgba"}


def from_image_folder(
    directory: str | os.PathLike,
    *,
    image_size: tuple[int, int],
    channels: int,
    input_scale: str,
    validation_split: float | None = 0.1,
    seed: int = 0,
    batch_size: int = 32,
    check: str = "full",
    folder: ImageFolder | None = None,
    stream: IO[str] | None = sys.stderr,
) -> ImageFolderData:
    """Streams an image folder with ``keras.utils.image_dataset_from_directory``.

    Args:
        directory: ``DIR`` with one sub-folder per class.
        image_size: ``(H, W)`` the images are resized to (the model's input size).
        channels: 1 (read as grayscale), 3 (RGB) or 4 (RGBA).
        input_scale: The scale the model expects: ``"0..1"``, ``"0..255"`` or ``"-1..1"``.
        validation_split: Share held out as ``val`` (keras's split, fixed by ``seed``);
            ``None`` or 0 for none.
        seed: Seed of the split and of the shuffling.
        batch_size: Batch size of both datasets.
        check: How images are checked first (see :func:`scan_image_folder`).
        folder: A scan already made (skips scanning again).
        stream: Where progress lines go.

    Returns:
        The :class:`ImageFolderData`.

    Raises:
        InvalidArgumentError: A bad argument, a folder with fewer than two classes or an
            empty class.
        DataError: An unreadable image (the first one, by name).

    Example:
        >>> from_image_folder("photos/", image_size=(32, 32), channels=3,
        ...                   input_scale="0-1")  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `input_scale`: '0-1'. ...
    """
    input_scale_range(input_scale)
    if channels not in _CHANNELS:
        raise errors.InvalidArgumentError(
            "channels", channels, "1 (grayscale), 3 (RGB) or 4 (RGBA) image channels"
        )
    if len(image_size) != 2 or not all(isinstance(s, int) and s > 0 for s in image_size):
        raise errors.InvalidArgumentError(
            "image_size", tuple(image_size), "(height, width), positive integers"
        )
    split = float(validation_split or 0.0)
    if not 0.0 <= split < 1.0:
        raise errors.InvalidArgumentError("validation_split", validation_split, "a share in [0, 1)")
    folder = folder or scan_image_folder(directory, check=check, stream=stream, channels=channels)
    n_val = int(split * len(folder.files)) if split > 0 else 0  # keras's own rounding
    if split > 0 and n_val == 0:
        # keras would then slice its training files with [:-0] and fail with "No training
        # images found".
        raise errors.InvalidArgumentError(
            "validation_split",
            validation_split,
            f"0 (no held-out split) or a share that holds at least one of the "
            f"{len(folder.files)} images (>= {math.ceil(1000 / len(folder.files)) / 1000:g})",
        )
    from pocketflow_tf.compat import keras, tf

    common = dict(
        labels="inferred",
        label_mode="int",
        class_names=folder.class_names,
        color_mode=_CHANNELS[channels],
        batch_size=batch_size,
        image_size=tuple(image_size),
        shuffle=True,
        seed=seed,
    )
    # keras prints "Found N files belonging to K classes." itself; that line is the record.
    if split > 0:
        train, val = keras.utils.image_dataset_from_directory(
            folder.directory, validation_split=split, subset="both", **common
        )
    else:
        train, val = keras.utils.image_dataset_from_directory(folder.directory, **common), None

    def _scale(x, y):
        return pixels_to_scale(x, input_scale), y

    auto = tf.data.AUTOTUNE
    train = train.map(_scale, num_parallel_calls=auto).prefetch(auto)
    if val is not None:
        val = val.map(_scale, num_parallel_calls=auto).prefetch(auto)
    return ImageFolderData(
        folder=folder,
        train=train,
        val=val,
        num_train=len(folder.files) - n_val,
        num_val=n_val,
        image_shape=(int(image_size[0]), int(image_size[1]), int(channels)),
        input_scale=input_scale,
    )


def from_npz(
    path: str | os.PathLike,
    *,
    input_scale: str | None = None,
    name: str = "data",
) -> datasets.DataSplits:
    """Reads ``x_train, y_train[, x_test, y_test]`` from an ``.npz`` file (no pickles).

    Args:
        path: The ``.npz`` file.
        input_scale: The scale the model expects. Required for ``uint8`` images (pixels
            0..255, mapped onto it); for float images optional, and then checked: their
            values must lie in it.
        name: The argument the file came from (echoed in errors).

    Returns:
        A :class:`~pocketflow_tf.datasets.DataSplits` (an empty test split when the file has
        none), checked by the input contract.

    Raises:
        InvalidArgumentError: A missing file, missing or unknown arrays, uint8 images
            without ``input_scale``, float images outside it.
        DataError: A corrupt file, or arrays of Python objects (refused: unpickling runs
            code).

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> np.savez(p, x_train=np.zeros((4, 8, 8, 1), np.uint8), y_train=[0, 1, 0, 1])
        >>> float(from_npz(p, input_scale="-1..1").x_train.min())
        -1.0
        >>> from_npz(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `input_scale`: None. Accepted: ...
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise errors.InvalidArgumentError(
            name, path, "an existing .npz file holding x_train, y_train[, x_test, y_test]"
        )
    if input_scale is not None:
        input_scale_range(input_scale)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = sorted(npz.files)
            unknown = [k for k in keys if k not in _NPZ_KEYS]
            if unknown or "x_train" not in keys or "y_train" not in keys:
                raise errors.InvalidArgumentError(
                    name,
                    f"{path} with arrays {keys}",
                    "an .npz file with exactly x_train, y_train and optionally x_test, y_test",
                )
            if ("x_test" in keys) != ("y_test" in keys):
                raise errors.InvalidArgumentError(
                    name, f"{path} with arrays {keys}", "x_test and y_test together, or neither"
                )
            arrays = {k: npz[k] for k in keys}
    except ValueError as e:  # numpy: object arrays need allow_pickle
        if isinstance(e, errors.PocketFlowError):
            raise
        raise errors.DataError(
            f"cannot read '{path}': {e} (arrays of Python objects are refused: loading them "
            "runs code; save plain numeric arrays)"
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise errors.DataError(f"cannot read '{path}': not a valid .npz file ({e})") from None
    for key in ("x_train", "x_test"):
        if key in arrays:
            arrays[key] = _to_scale(arrays[key], input_scale, f"{name} {key}", path)
    return datasets.from_arrays(
        arrays["x_train"],
        arrays["y_train"],
        arrays.get("x_test"),
        arrays.get("y_test"),
        name=os.path.splitext(os.path.basename(path))[0],
    )


def _to_scale(x: np.ndarray, input_scale: str | None, name: str, path: str) -> np.ndarray:
    if x.dtype == np.uint8:
        if input_scale is None:
            raise errors.InvalidArgumentError(
                "input_scale",
                None,
                f"one of {', '.join(INPUT_SCALES)}: '{path}' holds uint8 pixels, and the scale "
                "your model expects them in must be stated, not guessed",
            )
        return pixels_to_scale(x, input_scale)
    if input_scale is not None and np.issubdtype(x.dtype, np.floating) and x.size:
        lo, hi = INPUT_SCALES[input_scale]
        tol = 1e-3 * (hi - lo)
        xmin, xmax = float(np.nanmin(x)), float(np.nanmax(x))
        if xmin < lo - tol or xmax > hi + tol:
            raise errors.InvalidArgumentError(
                "input_scale",
                input_scale,
                f"the range of the float images in '{path}' ({name} spans "
                f"{xmin:g}..{xmax:g}); state the scale your model expects and store the "
                "images in it, or store uint8 pixels",
            )
    return x


__all__ = [
    "CHECKS",
    "DEFAULT_MAX_BYTES",
    "IMAGE_EXTENSIONS",
    "INPUT_SCALES",
    "ImageFolder",
    "ImageFolderData",
    "from_image_folder",
    "from_npz",
    "input_scale_range",
    "pixels_to_scale",
    "scan_image_folder",
]
