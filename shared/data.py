"""CIFAR-10 for both frameworks: locate (or download) the python batches, read them, split them.

Everything here is numpy only. Images are uint8 NHWC; each framework converts and normalises with the
shared ``MEAN``/``STD`` itself.

The validation split is carved from the official training set by *filename*, never by position: the local
copy's image order differs from the official files, and a split keyed on names is the same on every copy.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = len(CLASSES)
# Per-channel statistics of the training images (x/255), defined once so both frameworks normalise alike.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
REQUIRED_FILES = (*TRAIN_FILES, TEST_FILE)
HW = 32


class DatasetNotFoundError(FileNotFoundError):
    """No usable CIFAR-10 copy was found, and none could be downloaded."""


class CorruptBatchError(ValueError):
    """A batch file exists but cannot be read as a CIFAR-10 batch; the message names it and the fix."""


class ChecksumError(RuntimeError):
    """A downloaded archive does not match its published md5: corrupt or not the archive we asked for."""


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields explicitly
class Split:
    x: np.ndarray  # uint8 (N, 32, 32, 3), C-contiguous
    y: np.ndarray  # int64 (N,)
    names: np.ndarray | None = None  # str (N,): CIFAR filenames, the images' only stable identity

    def __post_init__(self):
        if len(self.x) != len(self.y) or (self.names is not None and len(self.names) != len(self.y)):
            raise ValueError(f"Split arrays disagree in length: x {len(self.x)}, y {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Dataset:
    train: Split
    val: Split  # carved from the official training set: calibration, sensitivity scans, every choice
    test: Split  # the official test set: reported numbers only
    source: str
    classes: tuple[str, ...] = CLASSES  # label i is classes[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------------------------- locating


def default_cache_dir() -> Path:
    env = os.environ.get("CIFAR10_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnn-compression-study"


def _missing(batch_dir: Path) -> list[str]:
    return [f for f in REQUIRED_FILES if not (batch_dir / f).is_file()]


def _explicit(path: str | os.PathLike, what: str) -> Path:
    # The user named this path, so falling through to another copy would silently use data they did not ask for.
    path = Path(path).expanduser()
    for candidate in (path, path / FOLDER):  # accept the folder's parent too: an easy slip
        if not _missing(candidate):
            return candidate.resolve()
    state = "does not exist" if not path.exists() else f"lacks {', '.join(_missing(path))}"
    raise DatasetNotFoundError(
        f"CIFAR-10 not found at {path} (from {what}): it {state}. Point it at the extracted "
        f"'{FOLDER}' folder that holds {', '.join(REQUIRED_FILES)}."
    )


def locate_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    download: bool = True,
) -> Path:
    """Return the directory holding the batches: ``data_dir``, else ``$CIFAR10_DIR``, else the cache, else
    download ``url`` into the cache (md5-verified before anything is extracted)."""
    if data_dir is not None:
        return _explicit(data_dir, "data_dir / --data-dir")
    env = os.environ.get("CIFAR10_DIR")
    if env:
        return _explicit(env, "CIFAR10_DIR")

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / FOLDER
    if not _missing(target):
        return target.resolve()

    if download:
        try:
            return _download(url, md5, cache)
        except ChecksumError:
            raise  # not a "missing data" case: the user must know the archive is bad
        except (OSError, ValueError, tarfile.TarError) as e:  # URLError is an OSError
            why = f"downloading {url} failed: {type(e).__name__}: {e}"
    else:
        why = "download disabled (download=False)"

    cache_state = "does not exist" if not target.exists() else f"incomplete, lacks {', '.join(_missing(target))}"
    raise DatasetNotFoundError(
        "CIFAR-10 not found. Looked in:\n"
        "  data_dir / --data-dir: not given\n"
        "  CIFAR10_DIR: unset\n"
        f"  cache: {target} ({cache_state})\n"
        f"  download: {why}\n"
        "Fix: pass --data-dir /path/to/cifar-10-batches-py, or set CIFAR10_DIR=/path/to/cifar-10-batches-py, "
        f"or extract the official cifar-10-python.tar.gz (md5 {CIFAR10_MD5}) into {cache} so that "
        f"{target / TRAIN_FILES[0]} exists."
    )


def _download(url: str, md5: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / FOLDER
    # Temp files live in the cache dir so the final rename is atomic (same filesystem).
    fd, part = tempfile.mkstemp(dir=cache, prefix=".cifar-10-python.", suffix=".tar.gz.part")
    extract_dir = None
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5.lower():
            raise ChecksumError(
                f"md5 checksum mismatch for {url}: expected {md5.lower()}, got {digest.hexdigest()}. "
                "The download was deleted and nothing was extracted."
            )
        extract_dir = Path(tempfile.mkdtemp(dir=cache, prefix=".cifar-10-extract."))
        with tarfile.open(part, "r:gz") as tar:
            tar.extractall(extract_dir, filter="data")  # refuses absolute paths, '..', links out, devices
        extracted = extract_dir / FOLDER
        if _missing(extracted):
            raise DatasetNotFoundError(f"archive {url} has no complete '{FOLDER}' folder")
        try:
            os.rename(extracted, target)
        except OSError:
            if _missing(target):  # a concurrent download that completed first is fine; anything else is not
                raise
        return target.resolve()
    finally:
        Path(part).unlink(missing_ok=True)
        if extract_dir is not None:
            shutil.rmtree(extract_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- reading


class _BatchUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what a numpy array needs, so a tampered file cannot run code."""

    _reconstruct = np.empty(0).__reduce__()[0]  # numpy's array rebuilder, wherever this numpy keeps it
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # Python-2 era files (the originals)
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2 writers
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes from Python 3
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which is not allowed") from None


def _corrupt(path: Path, why: str) -> CorruptBatchError:
    return CorruptBatchError(
        f"CIFAR-10 batch {path} is unreadable: {why}. Fix: re-extract cifar-10-python.tar.gz into "
        f"{path.parent.parent} (so that {path.parent.name}/ is whole again), or point --data-dir / CIFAR10_DIR "
        f"at another copy.")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError, KeyError,
            UnicodeDecodeError, MemoryError) as e:  # what truncated or garbage pickles raise
        raise _corrupt(path, f"{type(e).__name__}: {e}") from None
    try:
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in d[b"filenames"]]
    except (KeyError, TypeError, ValueError) as e:
        raise _corrupt(path, f"not a CIFAR-10 python batch ({e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * HW * HW or not len(data) == len(labels) == len(names):
        raise _corrupt(path, f"data {data.shape}, {len(labels)} labels, {len(names)} filenames disagree")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise _corrupt(path, f"labels outside 0..{NUM_CLASSES - 1}")
    return data, labels, names


def _to_nhwc(rows: np.ndarray) -> np.ndarray:
    # Rows are R plane, G plane, B plane, each row-major: one reshape+transpose, no per-image work.
    return np.ascontiguousarray(rows.reshape(-1, 3, HW, HW).transpose(0, 2, 3, 1))


def read_batches(batch_dir: str | os.PathLike):
    """Return ``(x_train, y_train, names_train, x_test, y_test, names_test)`` in file order:
    x uint8 (N, 32, 32, 3), y int64 (N,), names str (N,)."""
    batch_dir = Path(batch_dir)
    train = [_read_batch(batch_dir / f) for f in TRAIN_FILES]
    x_te, y_te, n_te = _read_batch(batch_dir / TEST_FILE)
    x_tr = _to_nhwc(np.concatenate([b[0] for b in train]))
    y_tr = np.concatenate([b[1] for b in train])
    n_tr = np.array([n for b in train for n in b[2]], dtype=str)
    return x_tr, y_tr, n_tr, _to_nhwc(x_te), y_te, np.array(n_te, dtype=str)


# --------------------------------------------------------------------------------------------- splitting


def _rank_order(names: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Indices sorted by sha256 of the filename: a pseudo-shuffle that ignores file order."""
    keys = [hashlib.sha256(n.encode("latin1")).digest() for n in names.tolist()]
    if len(set(keys)) < len(keys):  # duplicate names: break ties on content so file order still doesn't matter
        keys = [k + hashlib.sha256(x[i].tobytes()).digest() for i, k in enumerate(keys)]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def _take_per_class(order: np.ndarray, y: np.ndarray, per_class: int, what: str) -> np.ndarray:
    """The first ``per_class`` indices of each class in ``order``."""
    picked = []
    for c in range(NUM_CLASSES):
        of_class = order[y[order] == c]
        if len(of_class) < per_class:
            raise ValueError(f"{what} needs {per_class} images of class {c} ({CLASSES[c]}), only {len(of_class)} left")
        picked.append(of_class[:per_class])
    return np.concatenate(picked)


def _check_size(value, what: str, allow_zero: bool) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1)
            or value % NUM_CLASSES):
        raise ValueError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} multiple of "
                         f"{NUM_CLASSES} (stratified per class), got {value!r}")


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    train_subset: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    download: bool = True,
) -> Dataset:
    """Load CIFAR-10 as train / val / test.

    val: the ``val_size // 10`` images per class whose filenames hash lowest (sha256), ordered by that hash.
    train: the rest, in file order; ``train_subset`` keeps only the next ``train_subset // 10`` per class
    by the same ranking. test: the official test set, in file order.
    """
    _check_size(val_size, "val_size", allow_zero=True)
    if train_subset is not None:
        _check_size(train_subset, "train_subset", allow_zero=False)
    batch_dir = locate_cifar10(data_dir, cache_dir=cache_dir, url=url, md5=md5, download=download)
    x_tr, y_tr, n_tr, x_te, y_te, n_te = read_batches(batch_dir)

    order = _rank_order(n_tr, x_tr)
    val_idx = _take_per_class(order, y_tr, val_size // NUM_CLASSES, f"val_size={val_size}")
    is_val = np.zeros(len(y_tr), dtype=bool)
    is_val[val_idx] = True
    val_idx = order[is_val[order]]  # rank order: independent of the files' order
    if train_subset is None:
        train_idx = np.flatnonzero(~is_val)
    else:
        pool_order = order[~is_val[order]]
        picked = _take_per_class(pool_order, y_tr, train_subset // NUM_CLASSES, f"train_subset={train_subset}")
        train_idx = np.sort(picked)  # back to file order

    def split(x, y, n, idx=None):
        return Split(x, y, n) if idx is None else Split(x[idx], y[idx], n[idx])

    return Dataset(
        train=split(x_tr, y_tr, n_tr, train_idx),
        val=split(x_tr, y_tr, n_tr, val_idx),
        test=split(x_te, y_te, n_te),
        source=f"cifar10:{batch_dir}",
    )


def stratified_subset(split: Split, n: int, seed: int = 0) -> Split:
    """``n`` images of ``split``, an equal share per class, drawn with a fixed seed (a budget, not a choice)."""
    if n >= len(split):
        return split
    classes = np.unique(split.y)
    if n % len(classes):
        raise ValueError(f"subset size {n} must be a multiple of the {len(classes)} classes")
    rng = np.random.default_rng([seed, n])
    idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(split.y == c))[: n // len(classes)] for c in classes]))
    return Split(split.x[idx], split.y[idx], None if split.names is None else split.names[idx])


# --------------------------------------------------------------------------------------------- synthetic


def synthetic(n_train: int = 512, n_val: int = 128, n_test: int = 256, seed: int = 0,
              num_classes: int = NUM_CLASSES) -> Dataset:
    """Tiny CIFAR-shaped data that a small CNN learns in a couple of epochs, for smoke tests.

    Each class is a smooth random colour pattern (a 4x4 grid upsampled and blurred); a sample is its
    class pattern, circularly shifted by up to 3 px, plus Gaussian noise.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(num_classes, 4, 4, 3))
    protos = coarse.repeat(HW // 4, axis=1).repeat(HW // 4, axis=2)
    for axis in (1, 2):  # circular box blur: removes the grid's hard edges, stays consistent with wrap shifts
        protos = sum(np.roll(protos, s, axis=axis) for s in range(-4, 4)) / 8

    def make(n: int, tag: str) -> Split:
        y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)  # balanced to within one
        dy, dx = rng.integers(-3, 4, size=(2, n))
        rows = (np.arange(HW)[None, :] - dy[:, None]) % HW
        cols = (np.arange(HW)[None, :] - dx[:, None]) % HW
        img = protos[y[:, None, None], rows[:, :, None], cols[:, None, :]]
        img = img + rng.normal(0, 24, size=img.shape)
        x = np.ascontiguousarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))
        names = np.array([f"synthetic_{tag}_{i:06d}.png" for i in range(n)], dtype=str)
        return Split(x, y, names)

    classes = CLASSES if num_classes == NUM_CLASSES else tuple(f"class{i}" for i in range(num_classes))
    return Dataset(make(n_train, "train"), make(n_val, "val"), make(n_test, "test"), f"synthetic(seed={seed})",
                   classes)


# ------------------------------------------------------------------------------------------ test helper


def write_batches(x_train, y_train, x_test, y_test, out_dir, names_train=None, names_test=None) -> Path:
    """Write a canonical ``cifar-10-batches-py`` folder at ``out_dir`` (five training batches, test batch,
    batches.meta; protocol-2 pickles with bytes keys, like the originals) and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if names_train is None:
        names_train = [f"train_{i:06d}.png" for i in range(len(y_train))]
    if names_test is None:
        names_test = [f"test_{i:06d}.png" for i in range(len(y_test))]

    def dump(name, label, x, y, names):
        x = np.asarray(x, dtype=np.uint8)
        rows = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1)
        d = {b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": rows,
             b"filenames": [str(n).encode("latin1") for n in names]}
        with open(out / name, "wb") as f:
            pickle.dump(d, f, protocol=2)

    names_train = np.asarray(names_train, dtype=str)
    y_train = np.asarray(y_train)
    parts = np.array_split(np.arange(len(y_train)), len(TRAIN_FILES))
    for i, (fname, idx) in enumerate(zip(TRAIN_FILES, parts), start=1):
        dump(fname, f"training batch {i} of {len(TRAIN_FILES)}", np.asarray(x_train)[idx], y_train[idx],
             names_train[idx])
    dump(TEST_FILE, "testing batch 1 of 1", x_test, y_test, names_test)
    meta = {b"num_cases_per_batch": len(parts[0]), b"label_names": [c.encode() for c in CLASSES],
            b"num_vis": 3 * HW * HW}
    with open(out / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return out
