"""shared.data: reading, splitting, locating/downloading CIFAR-10, synthetic data. Generated data only,
except the ``real_data`` test, which needs the local copy and is skipped without it."""
from __future__ import annotations

import functools
import hashlib
import os
import http.server
import io
import pickle
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from shared import data

# The real CIFAR-10: $CIFAR10_DIR when set (read at import, before the autouse fixture below hides it from the
# other tests; set but wrong is a failure, not a skip), else ../shared/datasets beside the checkout.
ENV_REAL_DIR = os.environ.get("CIFAR10_DIR")
SIBLING_REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / data.FOLDER


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Never let a developer's CIFAR10_DIR or real cache leak into these tests.
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path / "default-cache"))


def make_arrays(n_train=200, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, size=(n_train, 32, 32, 3), dtype=np.uint8)
    x_te = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    y_tr = rng.permutation(np.arange(n_train) % 10)
    y_te = rng.permutation(np.arange(n_test) % 10)
    names_tr = np.array([f"img_{seed}_{i:05d}.png" for i in range(n_train)])
    names_te = np.array([f"test_{seed}_{i:05d}.png" for i in range(n_test)])
    return x_tr, y_tr, names_tr, x_te, y_te, names_te


@pytest.fixture
def fake(tmp_path):
    """A generated dataset written as a cifar-10-batches-py folder: (dir, arrays)."""
    arrays = make_arrays()
    x_tr, y_tr, n_tr, x_te, y_te, n_te = arrays
    d = data.write_batches(x_tr, y_tr, x_te, y_te, tmp_path / "src" / data.FOLDER, n_tr, n_te)
    return d, arrays


def rows_by_name(split):
    return {n: (x, y) for n, x, y in zip(split.names.tolist(), split.x, split.y.tolist())}


# ------------------------------------------------------------------------------------------ reading


def test_read_batches_decodes_planar_rgb_to_nhwc(tmp_path):
    # Hand-made batch, independent of write_batches: pixel (h, w) of channel c sits at c*1024 + h*32 + w.
    rows = np.zeros((2, 3072), np.uint8)
    rows[0, :1024], rows[0, 1024:2048], rows[0, 2048:] = 10, 20, 30
    rows[1, 0 * 1024 + 5 * 32 + 7] = 200  # R at h=5, w=7
    rows[1, 2 * 1024 + 31 * 32 + 0] = 99  # B at h=31, w=0
    batch = {b"batch_label": b"x", b"labels": [3, 9], b"data": rows, b"filenames": [b"a.png", b"b.png"]}
    for f in data.REQUIRED_FILES:
        (tmp_path / f).write_bytes(pickle.dumps(batch, protocol=2))

    x_tr, y_tr, n_tr, x_te, y_te, n_te = data.read_batches(tmp_path)
    assert x_tr.shape == (10, 32, 32, 3) and x_tr.dtype == np.uint8 and x_tr.flags.c_contiguous
    assert y_tr.dtype == np.int64 and y_tr.tolist() == [3, 9] * 5
    assert n_te.tolist() == ["a.png", "b.png"]
    assert (x_te[0] == [10, 20, 30]).all()
    assert x_te[1, 5, 7, 0] == 200 and x_te[1, 31, 0, 2] == 99 and x_te[1].sum() == 299


def test_read_batches_refuses_code_in_pickles(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    for f in data.REQUIRED_FILES:
        (tmp_path / f).write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(data.CorruptBatchError, match="exec, which is not allowed"):
        data.read_batches(tmp_path)
    assert not marker.exists()


def test_round_trip_exact(fake):
    d, (x_tr, y_tr, n_tr, x_te, y_te, n_te) = fake
    assert sorted(p.name for p in d.iterdir()) == sorted([*data.REQUIRED_FILES, "batches.meta"])
    ds = data.load_cifar10(data_dir=d, val_size=50)
    assert ds.source == f"cifar10:{d.resolve()}"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (150, 50, 100)
    for s in (ds.train, ds.val, ds.test):
        assert s.x.dtype == np.uint8 and s.x.shape[1:] == (32, 32, 3) and s.x.flags.c_contiguous
        assert s.y.dtype == np.int64
    assert np.bincount(ds.val.y, minlength=10).tolist() == [5] * 10
    assert np.bincount(ds.train.y, minlength=10).tolist() == [15] * 10
    # Test set untouched and in order; train + val are exactly the training images.
    assert np.array_equal(ds.test.x, x_te) and np.array_equal(ds.test.y, y_te)
    assert ds.test.names.tolist() == n_te.tolist()
    original = {n: (x, y) for n, x, y in zip(n_tr.tolist(), x_tr, y_tr.tolist())}
    loaded = rows_by_name(ds.train) | rows_by_name(ds.val)
    assert len(loaded) == 200 and loaded.keys() == original.keys()
    assert all(np.array_equal(loaded[n][0], original[n][0]) and loaded[n][1] == original[n][1] for n in original)
    # Training images stay in file order.
    pos = {n: i for i, n in enumerate(n_tr.tolist())}
    assert np.all(np.diff([pos[n] for n in ds.train.names.tolist()]) > 0)


def test_val_is_lowest_name_hashes_per_class(fake):
    d, (_, y_tr, n_tr, *_) = fake
    ds = data.load_cifar10(data_dir=d, val_size=50)
    for c in range(10):
        ranked = sorted(n_tr[y_tr == c].tolist(), key=lambda n: hashlib.sha256(n.encode()).digest())
        assert sorted(ds.val.names[ds.val.y == c].tolist()) == sorted(ranked[:5])


def test_val_split_independent_of_file_order(fake, tmp_path):
    d, (x_tr, y_tr, n_tr, x_te, y_te, n_te) = fake
    perm = np.random.default_rng(1).permutation(len(y_tr))
    d2 = data.write_batches(x_tr[perm], y_tr[perm], x_te, y_te, tmp_path / "perm" / data.FOLDER, n_tr[perm], n_te)
    a = data.load_cifar10(data_dir=d, val_size=50, train_subset=100)
    b = data.load_cifar10(data_dir=d2, val_size=50, train_subset=100)
    # val is ordered by name hash, so it matches exactly, not only as a set
    assert a.val.names.tolist() == b.val.names.tolist()
    assert np.array_equal(a.val.x, b.val.x) and np.array_equal(a.val.y, b.val.y)
    # the training subset is the same images, each in its own file order
    assert set(a.train.names.tolist()) == set(b.train.names.tolist())
    ra, rb = rows_by_name(a.train), rows_by_name(b.train)
    assert all(np.array_equal(ra[n][0], rb[n][0]) for n in ra)


def test_train_subset_stratified_and_disjoint_from_val(fake):
    d, (_, y_tr, n_tr, *_) = fake
    full = data.load_cifar10(data_dir=d, val_size=50)
    sub = data.load_cifar10(data_dir=d, val_size=50, train_subset=80)
    assert len(sub.train) == 80 and np.bincount(sub.train.y, minlength=10).tolist() == [8] * 10
    assert sub.val.names.tolist() == full.val.names.tolist()  # subsetting never moves the val split
    assert not set(sub.train.names.tolist()) & set(sub.val.names.tolist())
    assert set(sub.train.names.tolist()) <= set(full.train.names.tolist())
    # per class: the next 8 by name hash after the 5 taken for val
    for c in range(10):
        ranked = sorted(n_tr[y_tr == c].tolist(), key=lambda n: hashlib.sha256(n.encode()).digest())
        assert set(sub.train.names[sub.train.y == c].tolist()) == set(ranked[5:13])
    # the whole pool when asked for all of it
    assert data.load_cifar10(data_dir=d, val_size=50, train_subset=150).train.names.tolist() == \
        full.train.names.tolist()


def test_val_size_zero(fake):
    ds = data.load_cifar10(data_dir=fake[0], val_size=0)
    assert len(ds.val) == 0 and ds.val.x.shape == (0, 32, 32, 3) and len(ds.train) == 200


@pytest.mark.parametrize("kwargs, match", [
    (dict(val_size=55), "multiple of 10"),
    (dict(val_size=-10), "val_size"),
    (dict(val_size=210), "val_size=210 needs 21"),
    (dict(val_size=50, train_subset=15), "multiple of 10"),
    (dict(val_size=50, train_subset=0), "train_subset"),
    (dict(val_size=50, train_subset=160), "train_subset=160 needs 16"),
])
def test_bad_sizes(fake, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_cifar10(data_dir=fake[0], **kwargs)


# ----------------------------------------------------------------------------------------- locating


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path / "c"))
    assert data.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CIFAR10_CACHE")
    assert data.default_cache_dir() == Path.home() / ".cache" / "cnn-compression-study"


def test_explicit_data_dir_without_batches_fails_fast(fake, tmp_path):
    d, _ = fake
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = tmp_path / "cache"
    shutil.copytree(d, cache / data.FOLDER)  # a complete cache must not rescue an explicit wrong path
    with pytest.raises(data.DatasetNotFoundError, match="lacks data_batch_1") as e:
        data.locate_cifar10(empty, cache_dir=cache, download=False)
    assert str(empty) in str(e.value)
    with pytest.raises(data.DatasetNotFoundError, match="does not exist") as e:
        data.load_cifar10(tmp_path / "nope", cache_dir=cache, download=False)
    assert str(tmp_path / "nope") in str(e.value)


def test_data_dir_may_be_the_parent_folder(fake):
    d, _ = fake
    assert data.locate_cifar10(d.parent, download=False) == d.resolve()


def test_env_var_precedence(fake, tmp_path, monkeypatch):
    d, _ = fake
    monkeypatch.setenv("CIFAR10_DIR", str(d))
    assert data.locate_cifar10(download=False) == d.resolve()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert data.locate_cifar10(d, download=False) == d.resolve()  # data_dir beats CIFAR10_DIR
    monkeypatch.setenv("CIFAR10_DIR", str(empty))
    with pytest.raises(data.DatasetNotFoundError, match="CIFAR10_DIR") as e:
        data.locate_cifar10(download=False)
    assert str(empty) in str(e.value)


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


@pytest.mark.parametrize("url", ["closed-port", "file:///nonexistent/cifar-10-python.tar.gz"])
def test_missing_data_one_clear_error(tmp_path, url):
    cache = tmp_path / "cache"
    url = closed_port_url() if url == "closed-port" else url
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load_cifar10(cache_dir=cache, url=url)
    msg = str(e.value)
    for needle in (str(cache / data.FOLDER), "CIFAR10_DIR: unset", "--data-dir", "not given", url, "failed"):
        assert needle in msg
    assert isinstance(e.value, FileNotFoundError)
    assert not (cache / data.FOLDER).exists() and not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_download_disabled(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="download disabled"):
        data.locate_cifar10(cache_dir=tmp_path / "cache", download=False)


# ----------------------------------------------------------------------------------------- download


@pytest.fixture
def http_dir(tmp_path):
    """Serve a directory over http on 127.0.0.1: (root, base_url)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def make_archive(path: Path, folder: Path, extra: dict[str, bytes] | None = None) -> str:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=data.FOLDER)
        for name, payload in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verifies_extracts_and_caches(fake, http_dir, tmp_path):
    d, (x_tr, *_) = fake
    root, base = http_dir
    md5 = make_archive(root / "cifar.tar.gz", d)
    cache = tmp_path / "cache"

    ds = data.load_cifar10(cache_dir=cache, url=f"{base}/cifar.tar.gz", md5=md5, val_size=50)
    assert len(ds.train) == 150 and ds.source == f"cifar10:{(cache / data.FOLDER).resolve()}"
    assert sorted(p.name for p in cache.iterdir()) == [data.FOLDER]  # archive and temp dirs removed
    assert all((cache / data.FOLDER / f).is_file() for f in data.REQUIRED_FILES)

    again = data.load_cifar10(cache_dir=cache, url=closed_port_url(), md5="0" * 32, val_size=50)
    assert np.array_equal(again.train.x, ds.train.x) and again.val.names.tolist() == ds.val.names.tolist()


def test_download_checksum_mismatch_leaves_nothing(fake, http_dir, tmp_path):
    d, _ = fake
    root, base = http_dir
    real = make_archive(root / "cifar.tar.gz", d)
    cache = tmp_path / "cache"
    with pytest.raises(data.ChecksumError, match="md5") as e:
        data.load_cifar10(cache_dir=cache, url=f"{base}/cifar.tar.gz", md5=data.CIFAR10_MD5)
    assert data.CIFAR10_MD5 in str(e.value) and real in str(e.value)
    assert list(cache.iterdir()) == []


def test_download_refuses_unsafe_archive(fake, http_dir, tmp_path):
    d, _ = fake
    root, base = http_dir
    md5 = make_archive(root / "evil.tar.gz", d, extra={"../escaped.txt": b"x"})
    cache = tmp_path / "cache"
    with pytest.raises(data.DatasetNotFoundError, match="outside"):
        data.load_cifar10(cache_dir=cache, url=f"{base}/evil.tar.gz", md5=md5)
    assert not (tmp_path / "escaped.txt").exists() and list(cache.iterdir()) == []


def test_download_via_file_url(fake, tmp_path):
    d, _ = fake
    archive = tmp_path / "cifar.tar.gz"
    md5 = make_archive(archive, d)
    got = data.locate_cifar10(cache_dir=tmp_path / "cache", url=archive.as_uri(), md5=md5)
    assert got == (tmp_path / "cache" / data.FOLDER).resolve()


# ---------------------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_balance_determinism():
    ds = data.synthetic(n_train=100, n_val=30, n_test=50, seed=3)
    assert ds.source == "synthetic(seed=3)"
    for s, n in ((ds.train, 100), (ds.val, 30), (ds.test, 50)):
        assert s.x.shape == (n, 32, 32, 3) and s.x.dtype == np.uint8 and s.x.flags.c_contiguous
        assert s.y.shape == (n,) and s.y.dtype == np.int64 and len(s) == n
        counts = np.bincount(s.y, minlength=10)
        assert counts.max() - counts.min() <= 1 and len(counts) == 10
    again = data.synthetic(n_train=100, n_val=30, n_test=50, seed=3)
    other = data.synthetic(n_train=100, n_val=30, n_test=50, seed=4)
    assert np.array_equal(ds.train.x, again.train.x) and np.array_equal(ds.test.y, again.test.y)
    assert not np.array_equal(ds.train.x, other.train.x)
    assert np.bincount(data.synthetic(n_train=40, seed=0, num_classes=4).train.y).tolist() == [10] * 4


def test_synthetic_is_learnable():
    # A nearest-class-mean classifier stands in for a briefly trained CNN: the classes must separate.
    ds = data.synthetic(seed=0)
    flat = lambda s: s.x.reshape(len(s), -1).astype(np.float64)
    means = np.stack([flat(ds.train)[ds.train.y == c].mean(0) for c in range(10)])
    pred = np.argmin(((flat(ds.test)[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == ds.test.y).mean() > 0.9
    assert ds.train.x.std() > 30  # not trivially flat images


# ---------------------------------------------------------------------------------------- real data


def real_dir() -> Path:
    if ENV_REAL_DIR:
        path = Path(ENV_REAL_DIR)
        if not path.is_dir():
            pytest.fail(f"CIFAR10_DIR={ENV_REAL_DIR} is set but is not a directory: point it at the "
                        f"cifar-10-batches-py folder, or unset it to use {SIBLING_REAL_DIR}")
        return path
    if not SIBLING_REAL_DIR.is_dir():
        pytest.skip(f"no real CIFAR-10: CIFAR10_DIR is unset and {SIBLING_REAL_DIR} is absent")
    return SIBLING_REAL_DIR


@pytest.mark.real_data
def test_real_cifar10():
    ds = data.load_cifar10(real_dir(), val_size=5000, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (45000, 5000, 10000)
    assert np.bincount(ds.train.y).tolist() == [4500] * 10
    assert np.bincount(ds.val.y).tolist() == [500] * 10
    assert np.bincount(ds.test.y).tolist() == [1000] * 10
    assert ds.train.x.flags.c_contiguous and ds.train.x.dtype == np.uint8
    full = np.concatenate([ds.train.x, ds.val.x])
    mean = full.mean(axis=(0, 1, 2), dtype=np.float64) / 255
    np.testing.assert_allclose(mean, (0.491400, 0.482158, 0.446531), atol=1e-5)
    np.testing.assert_allclose(mean, data.MEAN, atol=1e-4)
    # Pins the name-keyed split: any change to the rule changes this digest.
    digest = hashlib.sha256("\n".join(sorted(ds.val.names.tolist())).encode()).hexdigest()
    assert digest == "42206b1e13f79e4e5d77f85da8d6590541c1ecf318e0aef49a1fbd0c26e4c04e"
