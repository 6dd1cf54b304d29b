import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from pocketflow_tf import datasets, errors, training


def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_fmnist(folder, n_train=12, n_test=6):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10,
    }
    for name, arr in arrays.items():
        _write_idx(os.path.join(folder, name), arr)
    return arrays


def test_idx_round_trip_and_scaling(tmp_path):
    arrays = _fake_fmnist(tmp_path)
    d = datasets.load_fashion_mnist(str(tmp_path))
    assert d.x_train.shape == (12, 28, 28, 1) and d.x_train.dtype == np.float32
    np.testing.assert_allclose(
        d.x_train[..., 0] * 255, arrays["train-images-idx3-ubyte.gz"], atol=1e-4
    )
    np.testing.assert_array_equal(d.y_test, np.arange(6) % 10)


def test_truncated_idx_is_reported(tmp_path):
    _fake_fmnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(errors.DataError, match="truncated"):
        datasets.load_fashion_mnist(str(tmp_path))


def test_missing_fmnist_names_the_package(tmp_path):
    with pytest.raises(errors.DataError, match="dataset-fashion-mnist"):
        datasets.load_fashion_mnist(str(tmp_path))


@pytest.mark.skipif(
    not os.path.exists(datasets.FMNIST_DEBIAN_DIR), reason="Debian dataset-fashion-mnist missing"
)
def test_real_fashion_mnist_from_debian_package():
    d = datasets.load_dataset("fmnist")
    assert d.x_train.shape == (60000, 28, 28, 1) and d.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert abs(float(d.x_train.mean()) - 0.2860) < 1e-3


def _cifar_arrays(n):
    rng = np.random.default_rng(2)
    return rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8), rng.integers(0, 10, n)


def _write_cifar_batches(folder, suffix, n, write):
    """CIFAR-10's five training batches and its test batch, ``n`` images each, written into
    ``folder`` by ``write(path, x, y)``; returns ``{file name: (x, y)}``."""
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}{suffix}" for i in range(1, 6)] + [f"test_batch{suffix}"]:
        batches[name] = _cifar_arrays(n)
        write(folder / name, *batches[name])
    return batches


def _write_pickled_batch(path, x, y):
    payload = {b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"labels": list(map(int, y))}
    with open(path, "wb") as f:
        pickle.dump(payload, f)


def _write_binary_batch(path, x, y):
    rows = np.concatenate(
        [y[:, None].astype(np.uint8), x.transpose(0, 3, 1, 2).reshape(len(x), -1)], 1
    )
    rows.tofile(path)


def test_cifar10_python_format(tmp_path):
    batches = _write_cifar_batches(tmp_path / "cifar-10-batches-py", "", 4, _write_pickled_batch)
    d = datasets.load_cifar10(str(tmp_path))
    assert d.x_train.shape == (20, 32, 32, 3) and d.x_test.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(d.x_test * 255, batches["test_batch"][0], atol=1e-3)
    np.testing.assert_array_equal(d.y_train[:4], batches["data_batch_1"][1])


def test_cifar10_binary_format(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    batches = _write_cifar_batches(folder, ".bin", 3, _write_binary_batch)
    d = datasets.load_dataset("cifar10", str(tmp_path))
    np.testing.assert_allclose(d.x_test * 255, batches["test_batch.bin"][0], atol=1e-3)
    np.testing.assert_array_equal(d.y_test, batches["test_batch.bin"][1])
    with open(folder / "test_batch.bin", "ab") as f:
        f.write(b"\x01\x02")
    with pytest.raises(errors.DataError, match="truncated"):
        datasets.load_cifar10(str(tmp_path))


def test_cifar10_missing_folder_is_clear(tmp_path):
    with pytest.raises(errors.DataError, match="No CIFAR-10 found"):
        datasets.load_cifar10(str(tmp_path))
    with pytest.raises(errors.InvalidArgumentError, match="data_dir"):
        datasets.load_cifar10(None)


def test_validation_split_is_stratified_disjoint_and_seeded():
    x = np.arange(200, dtype=np.float32).reshape(200, 1, 1, 1)
    d = datasets.from_arrays(x, np.arange(200) % 4)
    v = d.with_validation(0.2, seed=3)
    assert len(v.x_val) == 40 and len(v.x_train) == 160
    assert np.bincount(v.y_val).tolist() == [10, 10, 10, 10]
    assert not set(v.x_val.ravel()) & set(v.x_train.ravel())
    np.testing.assert_array_equal(v.x_val, d.with_validation(0.2, seed=3).x_val)
    assert not np.array_equal(v.x_val, d.with_validation(0.2, seed=4).x_val)
    with pytest.raises(errors.InvalidArgumentError, match="fraction"):
        d.with_validation(1.0)


def test_unknown_dataset_is_named():
    with pytest.raises(errors.InvalidArgumentError, match="'imagenet'"):
        datasets.load_dataset("imagenet")


def test_augmentation_keeps_shape_and_is_seeded():
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    y = np.arange(16)
    aug = training.Augmentation(pad=2, flip=True)

    def first_batch(seed):
        ds = training.make_dataset(x, y, 16, training=True, augmentation=aug, seed=seed)
        return next(iter(ds))[0].numpy()

    a, b = first_batch(5), first_batch(5)
    assert a.shape == (16, 8, 8, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.sort(a.ravel()), np.sort(x.ravel()))  # crops moved pixels out


def test_eval_pipeline_keeps_order():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    ds = training.make_dataset(x, None, 4)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in ds]).ravel(), np.arange(10))


def test_from_arrays_names_labels_it_cannot_count_classes_of():
    # String labels (an .npz of a '<U' array) failed in numpy's max() with UFuncTypeError.
    x = np.zeros((4, 4, 4, 1), np.float32)
    with pytest.raises(errors.InvalidArgumentError, match="`y_train`.*dtype <U3"):
        datasets.from_arrays(x, np.array(["cat", "dog"] * 2))
    with pytest.raises(errors.InvalidArgumentError, match="`y_test`.*outside"):
        datasets.from_arrays(x, np.arange(4), x, np.array([0, 1, -1, 2]))
