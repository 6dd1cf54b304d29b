"""The data the automated search works on, all carved from the *training* split.

The search ranks candidates by accuracy, so the accuracy it ranks by must come from data the
candidates were not trained on and that the final test never reuses: a held-out share of
the training data (stratified, seeded), or a validation split the caller gives. The test
split is never an input here.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((400, 4, 4, 1), dtype=np.float32)
    >>> d = make_search_data(x, np.arange(400) % 4, holdout=0.1, seed=0)
    >>> len(d.x_train), len(d.x_hold), len(d.x_verify)
    (360, 40, 200)
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from pocketflow_tf import datasets, errors

#: Export verification refuses fewer inputs (see ``tflite_verify.verify``).
MIN_VERIFY = 200


@dataclasses.dataclass
class SearchData:
    """Training-split arrays, each with one job.

    Attributes:
        x_train: Fine-tuning images (the training data less the held-out share).
        y_train: Their labels.
        x_hold: Held-out images: the accuracy every trial and the final model are ranked by.
        y_hold: Their labels.
        x_calib: A fixed subset of ``x_train`` for channel selection and the sensitivity
            analysis (fixed so that every trial and the final build select alike).
        y_calib: Their labels.
        x_rep: int8 calibration inputs (from ``x_train``).
        x_verify: Inputs an export is verified on: the held-out images, topped up with
            training images to the :data:`MIN_VERIFY` the verifier needs.
        y_verify: Their labels.
        holdout_source: How the held-out split was made, for the report.
        holdout_unseen: True for a validation split the caller gave as one the model never
            saw; False when it was carved from the training data (by the search, or by the
            caller: ``val_from_training``).

    Example:
        >>> x = np.random.default_rng(0).random((400, 4, 4, 1), dtype=np.float32)
        >>> d = make_search_data(x, np.arange(400) % 4, holdout=0.1, seed=0)
        >>> len(d.x_train) + len(d.x_hold), len(d.x_verify) >= MIN_VERIFY
        (400, True)
        >>> calib = {a.tobytes() for a in d.x_calib}  # a subset of the fine-tuning images
        >>> calib <= {a.tobytes() for a in d.x_train}, calib & {a.tobytes() for a in d.x_hold}
        (True, set())
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_hold: np.ndarray
    y_hold: np.ndarray
    x_calib: np.ndarray
    y_calib: np.ndarray
    x_rep: np.ndarray
    x_verify: np.ndarray
    y_verify: np.ndarray
    holdout_source: str
    holdout_unseen: bool = False

    def caveat(self) -> str | None:
        """Why held-out figures may be biased (``None`` for a validation split the model never saw).

        A share carved from the data passed as training data is usually data the model was
        trained on: its accuracy there runs high (ResNet-20 on Fashion-MNIST: 96.4 % held-out
        against 94.45 % on the test split), and drops measured there run larger than on unseen
        data, since compression erases some of what was memorised.

        Example:
            >>> x = np.zeros((300, 2, 2, 1), np.float32)
            >>> make_search_data(x, np.arange(300) % 3).caveat()[:40]
            'carved from the data given for training:'
        """
        if self.holdout_unseen:
            return None
        return (
            "carved from the data given for training: if the model was trained on these "
            "images (the usual case), accuracy here runs higher and drops run larger than on "
            "unseen data; pass a validation split the model never saw (x_val; pocketflow-tf: "
            "--val_data) for unbiased "
            "choices, and read the test figure (validation_data) for the unbiased result"
        )

    def baseline_note(self, acc: float) -> str | None:
        """A warning when the dense model scores near guessing on the held-out split.

        Compression keeps what a model does; one that does no better than always answering
        its commonest class (a wrong input scale, BatchNorm statistics that never settled,
        the wrong labels) makes every later "accuracy kept" true and worthless. Within 5 % of
        the way from that share to 100 % the run goes on, and says so.

        Example:
            >>> x = np.zeros((300, 2, 2, 1), np.float32)
            >>> data = make_search_data(x, np.arange(300) % 3)
            >>> data.baseline_note(0.35)[:46]
            'the dense model scores 35.0 % on the held-out '
            >>> data.baseline_note(0.9) is None
            True
        """
        counts = np.bincount(np.asarray(self.y_hold, dtype=np.int64).reshape(-1))
        majority = float(counts.max() / counts.sum()) if counts.sum() else 0.0
        # 5 % of the way from the commonest class's share to 100 %: a fixed 5 points could
        # not be passed when that class is above 95 % of the split.
        if acc > majority + 0.05 * (1.0 - majority):
            return None
        return (
            f"the dense model scores {100 * acc:.1f} % on the held-out split, no better than "
            f"always answering its commonest class ({100 * majority:.1f} %): check the input "
            "scale the model expects (pocketflow-tf: --input_scale), the labels, and the "
            "model itself (e.g. BatchNorm statistics after a short training); compression "
            "keeps what the model does, and here that is little"
        )

    def describe(self) -> dict[str, Any]:
        """Sizes and provenance for the report.

        Example:
            >>> import numpy as np
            >>> x = np.zeros((300, 2, 2, 1), np.float32)
            >>> make_search_data(x, np.arange(300) % 3).describe()["n_holdout"]
            30
        """
        return {
            "n_train": len(self.x_train),
            "n_holdout": len(self.x_hold),
            "n_calibration": len(self.x_calib),
            "n_int8_calibration": len(self.x_rep),
            "n_verify": len(self.x_verify),
            "holdout_source": self.holdout_source,
            "holdout_caveat": self.caveat(),
            "test_split": "never used by the search",
        }


def make_search_data(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    holdout: float = 0.1,
    seed: int = 0,
    calib_samples: int = 1000,
    rep_samples: int = 256,
    val_from_training: bool = False,
) -> SearchData:
    """Splits training arrays for the search (see :class:`SearchData`).

    Args:
        x: Training images (float32, as the model takes them).
        y: Integer labels.
        x_val: Optional held-out images from the training distribution (not the test set);
            when given, ``holdout`` is not used and all of ``x`` trains.
        y_val: Their labels.
        holdout: Share of ``x`` held out (stratified per class, seeded) when ``x_val`` is None.
        seed: Seed of the split and of the subsets.
        calib_samples: Size of the fixed calibration subset.
        rep_samples: int8 calibration inputs.
        val_from_training: True when ``x_val`` was itself carved from the images the model
            was trained on (e.g. a ``validation_split`` of the same data): the report keeps
            the caveat that held-out figures are biased. Only a validation split the model
            never saw is reported as unbiased. (Without ``x_val`` the split is carved here
            and always carries the caveat.)

    Raises:
        InvalidArgumentError: Arrays that do not match, a bad ``holdout``, or fewer than
            :data:`MIN_VERIFY` samples overall (exports could not be verified).

    Example:
        >>> import numpy as np
        >>> make_search_data(np.zeros((10, 2, 2, 1)), np.zeros(10))
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `x`: '10 samples'. Accepted: at least 200 training samples (every export is verified on 200 inputs).
    """
    x, y = _arrays("x", x, "y", y)
    if not isinstance(val_from_training, bool):
        raise errors.InvalidArgumentError("val_from_training", val_from_training, "True or False")
    if x_val is not None or y_val is not None:
        x_hold, y_hold = _arrays("x_val", x_val, "y_val", y_val)
        if x_hold.shape[1:] != x.shape[1:]:
            raise errors.InvalidArgumentError(
                "x_val", f"images of shape {x_hold.shape[1:]}", f"images of shape {x.shape[1:]}"
            )
        x_train, y_train = x, y
        source = f"given x_val ({len(x_hold)} samples)"
        if val_from_training:
            source += ", carved from the training data"
        unseen = not val_from_training
    else:
        if isinstance(holdout, bool) or not isinstance(holdout, int | float):
            raise errors.InvalidArgumentError("holdout", holdout, "a share in (0, 0.5]")
        if not 0.0 < holdout <= 0.5:
            raise errors.InvalidArgumentError("holdout", holdout, "a share in (0, 0.5]")
        if len(x) < MIN_VERIFY:
            raise errors.InvalidArgumentError(
                "x",
                f"{len(x)} samples",
                f"at least {MIN_VERIFY} training samples (every export is verified on "
                f"{MIN_VERIFY} inputs)",
            )
        num_classes = int(np.max(y)) + 1
        splits = datasets.DataSplits("auto", x, y, x[:0], y[:0], num_classes)
        splits = splits.with_validation(holdout, seed=seed)
        x_train, y_train, x_hold, y_hold = (
            splits.x_train,
            splits.y_train,
            splits.x_val,
            splits.y_val,
        )
        source = f"{holdout:g} of the training data, stratified, seed {seed}"
        unseen = False
    if len(x_train) + len(x_hold) < MIN_VERIFY:
        raise errors.InvalidArgumentError(
            "x",
            f"{len(x_train) + len(x_hold)} samples",
            f"at least {MIN_VERIFY} samples in x and x_val together (exports are verified)",
        )
    rng = np.random.default_rng(seed)
    calib_idx = rng.permutation(len(x_train))[: max(1, int(calib_samples))]
    rep_idx = rng.permutation(len(x_train))[: max(1, int(rep_samples))]
    n_fill = max(0, MIN_VERIFY - len(x_hold))
    fill_idx = rng.permutation(len(x_train))[:n_fill]
    return SearchData(
        x_train=x_train,
        y_train=y_train,
        x_hold=x_hold,
        y_hold=y_hold,
        x_calib=x_train[calib_idx],
        y_calib=y_train[calib_idx],
        x_rep=x_train[rep_idx],
        x_verify=np.concatenate([x_hold, x_train[fill_idx]]),
        y_verify=np.concatenate([y_hold, y_train[fill_idx]]),
        holdout_source=source,
        holdout_unseen=unseen,
    )


def fingerprint(*arrays: np.ndarray | None) -> str:
    """sha256 of arrays' shapes, dtypes and bytes: a resumed search checks it sees the same data.

    Example:
        >>> import numpy as np
        >>> fingerprint(np.zeros(3)) == fingerprint(np.zeros(3)) != fingerprint(np.ones(3))
        True
    """
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _arrays(xname: str, x: Any, yname: str, y: Any) -> tuple[np.ndarray, np.ndarray]:
    if x is None or y is None:
        raise errors.InvalidArgumentError(
            xname if x is None else yname, None, f"arrays {xname} and {yname} given together"
        )
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim == 2:  # one-hot rows
        y = y.argmax(axis=1)
    if x.ndim < 2 or len(x) == 0:
        raise errors.InvalidArgumentError(xname, f"shape {x.shape}", "a non-empty batch of images")
    if y.ndim != 1 or len(y) != len(x):
        raise errors.InvalidArgumentError(
            yname, f"labels of shape {y.shape}", f"{len(x)} integer labels, one per image"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise errors.InvalidArgumentError(yname, f"dtype {y.dtype}", "integer class labels")
        y = y.astype(np.int64)
    if x.dtype == np.uint8:  # the framework's convention (datasets.py): [0, 1] float32
        x = x.astype(np.float32) / np.float32(255.0)
    elif x.dtype != np.float32:
        x = x.astype(np.float32)
    return x, y


__all__ = ["MIN_VERIFY", "SearchData", "fingerprint", "make_search_data"]
