"""ImageFolder data for both frameworks: ``ROOT/train/<class>/*``, ``ROOT/val/<class>/*``, optional ``ROOT/test``.

The layout of torchvision's ``ImageFolder`` and of the Hymenoptera ants-vs-bees set. Every image is decoded
once (PIL), converted to RGB, its shorter side resized and the centre cropped square, and the uint8 NHWC
arrays are cached as an ``.npz`` (read back with ``allow_pickle=False``): a rerun decodes nothing. Training
images are kept at ``stored_size`` (the crop's 8/7, as 256 is to 224) so that ``random_crop_flip`` can take
batched random crops of ``size`` from them; validation and test images are centre-cropped to ``size``.

Choices are made on the validation split, numbers are reported on the test split. A tree without ``test/``
(Hymenoptera has train/ and val/ only) reports on its ``val/`` folder, and the validation split is then carved
from ``train/``: a stated fraction of each class, chosen by file name, the same on every copy.

numpy and PIL only: no framework is imported here.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Dataset, Split, default_cache_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
STORED_RATIO = 8 / 7  # ImageNet's convention: resize to 256, crop 224
CACHE_VERSION = 1  # part of the cache key: bump when decoding changes


class ImageFolderError(ValueError):
    """The tree or one of its images cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class FolderSplit:
    paths: tuple[Path, ...]
    labels: tuple[int, ...]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan(root: str | os.PathLike) -> tuple[tuple[str, ...], dict[str, FolderSplit]]:
    """(classes, {"train", "val"[, "test"]: FolderSplit}); classes are train/'s sub-folders, sorted."""
    root = Path(root).expanduser()
    fix = "point --data imagefolder:ROOT at a folder holding train/<class>/ and val/<class>/ image folders"
    if not root.is_dir():
        raise ImageFolderError(f"ImageFolder root {root} {'is not a directory' if root.exists() else 'does not exist'}: {fix}")
    for need in ("train", "val"):
        if not (root / need).is_dir():
            raise ImageFolderError(f"ImageFolder root {root} has no {need}/ folder: {fix}")
    classes = tuple(sorted(d.name for d in (root / "train").iterdir() if d.is_dir()))
    if len(classes) < 2:
        raise ImageFolderError(f"{root / 'train'} holds {len(classes)} class folder(s); a classifier needs at least 2")
    splits = {}
    for name in ("train", "val", "test"):
        folder = root / name
        if not folder.is_dir():
            continue
        present = sorted(d.name for d in folder.iterdir() if d.is_dir())
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise ImageFolderError(f"{folder} has class folders that train/ lacks: {', '.join(unknown)}; every class "
                                   f"needs training images (or remove those folders)")
        paths, labels = [], []
        for k, cls in enumerate(classes):
            images = _images(folder / cls) if (folder / cls).is_dir() else []
            if not images and name == "train":
                raise ImageFolderError(f"{folder / cls} holds no images ({', '.join(IMAGE_SUFFIXES)}): add some or "
                                       f"remove the class folder")
            paths += images
            labels += [k] * len(images)
        if not paths:
            raise ImageFolderError(f"{folder} holds no images in any class folder ({', '.join(classes)})")
        splits[name] = FolderSplit(tuple(paths), tuple(labels))
    return classes, splits


def decode(path: Path, side: int) -> np.ndarray:
    """uint8 (side, side, 3): RGB, shorter side resized to ``side`` (bilinear, antialiased), centre crop."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = side / min(w, h)
            im = im.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - side) // 2, (h - side) // 2
            return np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageFolderError(f"image {path} is unreadable ({type(exc).__name__}: {exc}); replace or delete it") from None


def _key(root: Path, splits: dict[str, FolderSplit], size: int, stored: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} {root.resolve()} {size} {stored}".encode())
    for name, split in sorted(splits.items()):
        for p, y in zip(split.paths, split.labels):
            st = p.stat()
            h.update(f"{name} {p.relative_to(root)} {y} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _carve_val(split: FolderSplit, fraction: float, classes: tuple[str, ...]) -> tuple[FolderSplit, FolderSplit]:
    """A fraction of each class, the files whose name hashes lowest: independent of listing order and copy."""
    keep, val = [], []
    for k in sorted(set(split.labels)):
        members = [p for p, y in zip(split.paths, split.labels) if y == k]
        members.sort(key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
        n_val = int(round(fraction * len(members)))
        if n_val < 1 or n_val >= len(members):
            raise ImageFolderError(f"class {classes[k]!r} has {len(members)} training images: too few to carve a "
                                   f"validation fraction of {fraction:g} from; add images, or give the tree a test/ "
                                   f"folder so that val/ serves for validation")
        val += [(p, k) for p in members[:n_val]]
        keep += [(p, k) for p in members[n_val:]]

    def as_split(pairs):
        pairs.sort()
        return FolderSplit(tuple(p for p, _ in pairs), tuple(y for _, y in pairs))

    return as_split(keep), as_split(val)


def load_imagefolder(root: str | os.PathLike, size: int, *, val_fraction: float = 0.2,
                     cache_dir: str | os.PathLike | None = None, train_side: int | None = None,
                     log=print) -> tuple[Dataset, tuple[str, ...]]:
    """The tree as a ``Dataset`` (train at ``stored_size(size)``, or ``train_side`` for a recipe that pads and
    crops at ``size`` itself, as the CIFAR recipe does; val and test at ``size``) and its classes."""
    root = Path(root).expanduser()
    classes, splits = scan(root)
    if "test" not in splits:  # report on val/, choose on a slice of train/
        splits["test"] = splits["val"]
        splits["train"], splits["val"] = _carve_val(splits["train"], val_fraction, classes)
    stored = stored_size(size) if train_side is None else int(train_side)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache / f"imagefolder-{_key(root, splits, size, stored)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return _dataset(root, {n: (z[f"{n}_x"], z[f"{n}_y"], z[f"{n}_names"]) for n in splits},
                                classes), classes
        except (OSError, ValueError, KeyError) as exc:
            log(f"warning: ImageFolder cache {path} is unreadable ({exc}); decoding again")
    arrays = {}
    for name, split in splits.items():
        side = stored if name == "train" else size
        log(f"decoding {len(split.paths)} {name} images of {root} at {side}x{side}")
        x = np.stack([decode(p, side) for p in split.paths])
        names = np.array([str(p.relative_to(root)) for p in split.paths])
        arrays[name] = (x, np.asarray(split.labels, dtype=np.int64), names)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # unique per process; renamed whole
    np.savez(tmp, **{f"{n}_{k}": a for n, (x, y, names) in arrays.items() for k, a in (("x", x), ("y", y),
                                                                                         ("names", names))})
    os.replace(tmp, path)
    return _dataset(root, arrays, classes), classes


def _dataset(root: Path, arrays: dict, classes: tuple[str, ...]) -> Dataset:
    split = {n: Split(np.ascontiguousarray(x), y.astype(np.int64), names) for n, (x, y, names) in arrays.items()}
    return Dataset(split["train"], split["val"], split["test"], source=f"imagefolder:{root}", classes=classes)


def stored_size(size: int) -> int:
    return int(round(size * STORED_RATIO))


def random_crop_flip(x: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A batch's random ``size`` crops (one offset per image) and horizontal flips, without a per-image loop
    over pixels: one fancy-indexing gather for the whole batch."""
    n, h, w, _ = x.shape
    if h < size or w < size:
        raise ValueError(f"images of {h}x{w} cannot give {size}x{size} crops")
    oy = rng.integers(0, h - size + 1, n)
    ox = rng.integers(0, w - size + 1, n)
    flip = rng.random(n) < 0.5
    rows = oy[:, None] + np.arange(size)[None, :]
    cols = ox[:, None] + np.arange(size)[None, :]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return x[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
