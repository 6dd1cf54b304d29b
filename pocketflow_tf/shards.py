"""Each worker reads its own shard of a streamed training source, never the whole set.

For data that does not fit one process: an image folder (``DIR/<class>/<image>``, listed
as :func:`user_data.scan_image_folder <pocketflow_tf.user_data.scan_image_folder>` lists
it) or a list of ``.npz`` files each holding ``x_train, y_train``. The file list is split
*before* anything is read or decoded (``tf.data.Dataset.shard(count, index)`` on the
names), so a worker opens only its own files:

* **deterministic**: worker ``index`` of ``count`` takes items ``index, index + count, ...``
  of the sorted list (for a folder, images class by class in name order, so every shard
  holds a share of every class); a restarted run, or a worker started again on another
  host with the same flags, gets the same shard;
* **disjoint, and together everything**: shards differ in size by one item at most;
* **equal steps**: every worker runs ``(items // count) // batch_size`` steps per epoch
  (collectives need the same number on all workers); each epoch a worker draws them
  from its whole shard, reshuffled (seeded), so no image is left out for good;
* **resumable**: an epoch-level resume (the learners' per-epoch backups) sees the same
  shards; the shuffle order of the resumed epoch is the seed's, as for in-memory arrays.

The dataset yields ``(images float32 in input_scale, labels int32)`` batches of this
worker's batch size and carries ``AutoShardPolicy.OFF``: the backends then use it as this
worker's part as it is (:func:`is_presharded`), instead of sharding it again.

Example:
    >>> from pocketflow_tf import shards
    >>> shards.shard_indices(10, index=1, count=3).tolist()
    [1, 4, 7]
    >>> part = shards.image_folder_shard("photos/", index=0, count=2, image_size=(32, 32),
    ...                                  channels=3, input_scale="0..1",
    ...                                  batch_size=32)  # doctest: +SKIP
    >>> learner.fit(model, part.dataset)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from pocketflow_tf import errors, user_data


def shard_indices(n: int, index: int, count: int) -> np.ndarray:
    """The positions of worker ``index``'s items among ``n`` (``index::count``).

    Raises:
        InvalidArgumentError: ``index`` outside ``[0, count)``, or fewer items than workers.

    Example:
        >>> shard_indices(5, 0, 2).tolist(), shard_indices(5, 1, 2).tolist()
        ([0, 2, 4], [1, 3])
    """
    _check_shard(index, count)
    if n < count:
        raise errors.InvalidArgumentError(
            "data", f"{n} items", f"at least one item per worker ({count} workers)"
        )
    return np.arange(index, n, count)


def steps_per_epoch(n: int, count: int, batch_size: int) -> int:
    """Steps every worker runs per epoch: full batches of the smallest shard.

    Raises:
        InvalidArgumentError: The smallest shard holds less than one batch.

    Example:
        >>> steps_per_epoch(100, 2, 16)
        3
    """
    steps = (n // count) // batch_size
    if steps < 1:
        raise errors.InvalidArgumentError(
            "batch_size",
            batch_size,
            f"at most {n // count}: each of the {count} workers' shard of {n} items must hold "
            "one full batch",
        )
    return steps


def _check_shard(index: int, count: int) -> None:
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int)):
        raise errors.InvalidArgumentError("shard", (index, count), "integers index, count >= 1")
    if not 0 <= index < count:
        raise errors.InvalidArgumentError("shard", (index, count), "0 <= index < count")


@dataclasses.dataclass(frozen=True)
class Shard:
    """One worker's part of a streamed source.

    Attributes:
        dataset: Batched ``(x, y)`` of this worker, ``steps`` batches per epoch, reshuffled
            each epoch; marked pre-sharded (:func:`is_presharded`).
        files: The files this worker reads, in shard order.
        index: This worker's index.
        count: The number of workers.
        steps: Batches per epoch (the same on every worker).
        total: Items in the whole source.

    Example:
        >>> Shard(None, ["a.png"], 0, 2, 1, 2).count
        2
    """

    dataset: Any
    files: list[str]
    index: int
    count: int
    steps: int
    total: int


def is_presharded(dataset: Any) -> bool:
    """Whether ``dataset`` is already this worker's part (``AutoShardPolicy.OFF``), as a
    :class:`Shard`'s dataset is: backends must then not shard it again.

    Example:
        >>> from pocketflow_tf.compat import tf
        >>> is_presharded(tf.data.Dataset.range(3))
        False
    """
    from pocketflow_tf.compat import tf

    if not isinstance(dataset, tf.data.Dataset):
        return False
    policy = dataset.options().experimental_distribute.auto_shard_policy
    return policy == tf.data.experimental.AutoShardPolicy.OFF


def _finish(ds, n_total: int, index: int, count: int, batch_size: int, seed: int, shard_len: int):
    from pocketflow_tf.compat import tf

    steps = steps_per_epoch(n_total, count, batch_size)
    # take(steps): every worker yields the same number of batches, whatever its shard size.
    ds = ds.batch(batch_size, drop_remainder=True).take(steps).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return ds.with_options(options), steps


def image_folder_shard(
    directory: str | os.PathLike,
    *,
    index: int,
    count: int,
    image_size: tuple[int, int],
    channels: int,
    input_scale: str,
    batch_size: int,
    seed: int = 0,
    check: str = "header",
    stream: IO[str] | None = sys.stderr,
) -> Shard:
    """Worker ``index``'s shard of an image folder, streamed and decoded on the fly.

    The folder is listed (names only), the list is split, and only this shard's files
    are checked (``check``) and then read, decoded and resized as
    ``keras.utils.image_dataset_from_directory`` does (``tf.io.decode_image``, bilinear
    ``tf.image.resize``), pixels mapped to ``input_scale``.

    Args:
        directory: ``DIR`` with one sub-folder per class.
        index: This worker's index (``backend.rank``).
        count: The number of workers (``backend.size``).
        image_size: ``(H, W)``, the model's input size.
        channels: 1, 3 or 4.
        input_scale: ``"0..1"``, ``"0..255"`` or ``"-1..1"``.
        batch_size: This worker's batch size.
        seed: Seed of the per-epoch shuffle (the same on every worker).
        check: How this shard's images are checked first: ``"full"``, ``"header"``, ``"none"``.
        stream: Where progress lines go.

    Returns:
        The :class:`Shard`.

    Raises:
        InvalidArgumentError: A bad argument or folder, or a shard smaller than one batch.
        DataError: An unreadable image of this shard.

    Example:
        >>> image_folder_shard("photos/", index=2, count=2, image_size=(8, 8), channels=1,
        ...                    input_scale="0..1", batch_size=4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `shard`: (2, 2). Accepted: 0 <= index < count.
    """
    _check_shard(index, count)
    user_data.input_scale_range(input_scale)
    modes = {1: "grayscale", 3: "rgb", 4: "rgba"}
    if channels not in modes:
        raise errors.InvalidArgumentError(
            "channels", channels, "1 (grayscale), 3 (RGB) or 4 (RGBA) image channels"
        )
    if len(image_size) != 2 or not all(isinstance(s, int) and s > 0 for s in image_size):
        raise errors.InvalidArgumentError(
            "image_size", tuple(image_size), "(height, width), positive integers"
        )
    folder = user_data.scan_image_folder(directory, check="none", stream=stream)
    picks = shard_indices(len(folder.files), index, count)
    files = [folder.files[i] for i in picks]
    labels = np.asarray(folder.labels, np.int32)[picks]
    user_data.check_files(files, check, stream)
    from pocketflow_tf.compat import tf

    height, width = image_size

    def load(path, label):
        raw = tf.io.read_file(path)
        img = tf.io.decode_image(raw, channels=channels, expand_animations=False)
        img = tf.image.resize(img, (height, width), method="bilinear")
        img.set_shape((height, width, channels))
        return user_data.pixels_to_scale(img, input_scale), label

    # Names are shuffled, not images: the buffer holds the whole shard's names (bytes each),
    # and decoding happens after, for the batches actually drawn.
    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds, steps = _finish(ds, len(folder.files), index, count, batch_size, seed, len(files))
    return Shard(ds, files, index, count, steps, len(folder.files))


def npz_shards(
    paths: Sequence[str | os.PathLike],
    *,
    index: int,
    count: int,
    batch_size: int,
    seed: int = 0,
    input_scale: str | None = None,
) -> Shard:
    """Worker ``index``'s share of a list of ``.npz`` files (``x_train, y_train`` each).

    Files are the unit: worker ``index`` loads only files ``index, index + count, ...`` of
    the sorted list, one at a time when the pipeline reaches them (``allow_pickle=False``,
    checked as :func:`user_data.from_npz <pocketflow_tf.user_data.from_npz>` checks a file).
    Every worker runs the steps of the smallest shard; the item counts come from the files'
    array headers, which are read without loading the arrays.

    Args:
        paths: The ``.npz`` files (at least ``count``).
        index: This worker's index.
        count: The number of workers.
        batch_size: This worker's batch size.
        seed: Seed of the per-epoch shuffle (file order, and items within a file).
        input_scale: As in :func:`user_data.from_npz <pocketflow_tf.user_data.from_npz>`.

    Returns:
        The :class:`Shard`.

    Raises:
        InvalidArgumentError: Fewer files than workers, or a shard smaller than one batch.

    Example:
        >>> npz_shards(["a.npz"], index=0, count=2, batch_size=4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `data`: '1 items'. Accepted: at least one item per worker (2 workers).
    """
    _check_shard(index, count)
    paths = sorted(os.fspath(p) for p in paths)
    picks = shard_indices(len(paths), index, count)
    sizes = [_npz_rows(p) for p in paths]
    per_worker = [sum(sizes[i] for i in shard_indices(len(paths), w, count)) for w in range(count)]
    mine = [paths[i] for i in picks]
    from pocketflow_tf.compat import tf

    first = user_data.from_npz(mine[0], input_scale=input_scale, name="npz_shards")
    spec = (
        tf.TensorSpec((None, *first.x_train.shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )

    def load(path):
        splits = user_data.from_npz(path.decode(), input_scale=input_scale, name="npz_shards")
        yield splits.x_train.astype(np.float32), splits.y_train.astype(np.int64)

    files = tf.data.Dataset.from_tensor_slices(mine).shuffle(
        len(mine), seed=seed, reshuffle_each_iteration=True
    )
    ds = files.interleave(
        lambda p: tf.data.Dataset.from_generator(load, output_signature=spec, args=(p,)),
        cycle_length=1,  # one file open at a time: a worker holds one file's arrays
    ).unbatch()
    ds = ds.shuffle(max(sizes), seed=seed, reshuffle_each_iteration=True)
    steps = min(per_worker) // batch_size
    if steps < 1:
        raise errors.InvalidArgumentError(
            "batch_size",
            batch_size,
            f"at most {min(per_worker)}: the smallest worker's shard must hold one full batch",
        )
    ds, _ = _finish(ds, min(per_worker) * count, index, count, batch_size, seed, per_worker[index])
    return Shard(ds, mine, index, count, steps, sum(sizes))


def _npz_rows(path: str) -> int:
    """Rows of ``y_train`` in an ``.npz``, from its array header alone."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf, zf.open("y_train.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = {1: np.lib.format.read_array_header_1_0}.get(
                major, np.lib.format.read_array_header_2_0
            )
            shape, _, _ = read(f)
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise errors.InvalidArgumentError(
            "npz_shards", path, f"an .npz file holding x_train and y_train arrays ({exc})"
        ) from None
    return int(shape[0]) if shape else 0


__all__ = [
    "Shard",
    "image_folder_shard",
    "is_presharded",
    "npz_shards",
    "shard_indices",
    "steps_per_epoch",
]
