"""The ImageFolder loader (shared.imagefolder) on trees these tests write with PIL: JPEG and PNG, two classes,
odd sizes; golden pixels of the resize and centre crop; a corrupt image named in the error; the cache."""
import numpy as np
import pytest
from PIL import Image

from shared import imagefolder as IF


def _image(path, w, h, left=(200, 0, 0), right=(0, 0, 200)):
    """Left half one colour, right half another: a centre crop keeps both halves, a flip swaps them."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2], a[:, w // 2:] = left, right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(a).save(path)
    return path


def _tree(root, n_train=5, n_val=2, test=False):
    for k, cls in enumerate(("ants", "bees")):
        for i in range(n_train):
            _image(root / "train" / cls / f"{cls}_{i}.{'jpg' if i % 2 else 'png'}", 60 + 10 * i, 40 + 5 * k)
        for i in range(n_val):
            _image(root / "val" / cls / f"v_{cls}_{i}.png", 50, 70)
            if test:
                _image(root / "test" / cls / f"t_{cls}_{i}.jpg", 48, 48)
    return root


def test_a_tree_without_test_reports_on_val_and_chooses_on_a_slice_of_train(tmp_path):
    root = _tree(tmp_path / "hym")
    ds, classes = IF.load_imagefolder(root, 16, val_fraction=0.2, cache_dir=tmp_path / "cache", log=lambda _: None)
    assert classes == ("ants", "bees")
    assert ds.train.x.shape == (8, 18, 18, 3) and ds.train.x.dtype == np.uint8  # 16 * 8/7 = 18.3 -> 18
    assert ds.val.x.shape == (2, 16, 16, 3) and ds.test.x.shape == (4, 16, 16, 3)
    assert sorted(ds.val.y.tolist()) == [0, 1] and sorted(ds.test.y.tolist()) == [0, 0, 1, 1]
    assert all(n.startswith("val/") for n in ds.test.names)  # val/ is what is reported
    assert not set(ds.val.names) & set(ds.train.names)  # the carved validation images left train
    assert ds.source == f"imagefolder:{root}"


def test_resize_and_centre_crop_golden_pixels(tmp_path):
    path = _image(tmp_path / "wide.png", 80, 40)  # 2:1, left red, right blue
    x = IF.decode(path, 20)  # shorter side 40 -> 20, width 40, centre 20 columns: 10 red, 10 blue
    assert x.shape == (20, 20, 3)
    assert (x[:, :9] == (200, 0, 0)).all() and (x[:, 11:] == (0, 0, 200)).all()
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((30, 30), 77, np.uint8), mode="L").save(grey)
    assert (IF.decode(grey, 16) == 77).all()  # greyscale becomes RGB; a constant survives the resize exactly


def test_a_class_too_small_to_carve_a_validation_slice_is_named(tmp_path):
    root = _tree(tmp_path / "tiny", n_train=2)
    with pytest.raises(IF.ImageFolderError, match=r"class 'ants' has 2 training images: too few .* test/ folder"):
        IF.load_imagefolder(root, 16, val_fraction=0.2, cache_dir=tmp_path / "c", log=lambda _: None)


def test_a_tree_with_test_keeps_its_splits(tmp_path):
    ds, _ = IF.load_imagefolder(_tree(tmp_path / "t", test=True), 16, cache_dir=tmp_path / "c", log=lambda _: None)
    assert len(ds.train) == 10 and len(ds.val) == 4 and len(ds.test) == 4
    assert all(n.startswith("test/") for n in ds.test.names) and all(n.startswith("val/") for n in ds.val.names)


def test_a_corrupt_image_is_named_with_the_fix(tmp_path):
    root = _tree(tmp_path / "bad")
    bad = root / "train" / "bees" / "bees_3.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(IF.ImageFolderError, match=rf"image {bad} is unreadable .*replace or delete it"):
        IF.load_imagefolder(root, 16, cache_dir=tmp_path / "c", log=lambda _: None)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*.npz"))  # nothing half-written


@pytest.mark.parametrize("damage, message", [
    (lambda root: root / "nowhere", "does not exist: point --data imagefolder:ROOT at a folder holding train/"),
    (lambda root: (__import__("shutil").rmtree(root / "val"), root)[1], "has no val/ folder"),
    (lambda root: ([p.unlink() for p in (root / "train" / "ants").iterdir()], root)[1], "ants holds no images"),
    (lambda root: (_image(root / "val" / "wasps" / "w.png", 20, 20), root)[1], "class folders that train/ lacks: wasps"),
])
def test_a_bad_tree_is_refused_naming_the_folder(tmp_path, damage, message):
    root = damage(_tree(tmp_path / "tree"))
    with pytest.raises(IF.ImageFolderError, match=message):
        IF.load_imagefolder(root, 16, cache_dir=tmp_path / "c", log=lambda _: None)


def test_a_second_load_reads_the_cache_and_a_changed_file_decodes_again(tmp_path, monkeypatch):
    root = _tree(tmp_path / "tree")
    first, _ = IF.load_imagefolder(root, 16, cache_dir=tmp_path / "c", log=lambda _: None)
    (cached,) = (tmp_path / "c").glob("imagefolder-*.npz")
    monkeypatch.setattr(IF, "decode", lambda *a: pytest.fail("decoded again"))
    again, _ = IF.load_imagefolder(root, 16, cache_dir=tmp_path / "c", log=lambda _: None)
    np.testing.assert_array_equal(again.train.x, first.train.x)
    assert list(again.test.names) == list(first.test.names)
    monkeypatch.undo()
    _image(root / "train" / "ants" / "ants_0.png", 90, 90)  # same name, new content: a new key
    IF.load_imagefolder(root, 16, cache_dir=tmp_path / "c", log=lambda _: None)
    assert len(list((tmp_path / "c").glob("imagefolder-*.npz"))) == 2 and cached.exists()


def test_random_crop_flip_takes_one_crop_and_flip_per_image():
    x = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1).repeat(3, axis=3)
    rng = np.random.default_rng(0)
    out = IF.random_crop_flip(x, 2, rng)
    assert out.shape == (2, 2, 2, 3)
    rng = np.random.default_rng(0)
    oy, ox, flip = rng.integers(0, 3, 2), rng.integers(0, 3, 2), rng.random(2) < 0.5
    for i in range(2):
        want = x[i, oy[i]:oy[i] + 2, ox[i]:ox[i] + 2]
        np.testing.assert_array_equal(out[i], want[:, ::-1] if flip[i] else want)
    with pytest.raises(ValueError, match="images of 4x4 cannot give 5x5 crops"):
        IF.random_crop_flip(x, 5, rng)
