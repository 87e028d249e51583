"""Transfer learning, defined once: the protocol, the demonstration's data, and the backbone-to-head state.

The ``transfer`` preset stands in for the seed's Hymenoptera experiment without a download: a CIFAR ResNet-18
is pretrained on 8 CIFAR-10 classes and transferred to the 2 held out (cat and dog: a fine-grained pair, as
ants and bees are), with a Hymenoptera-sized training set (125 + 125 images, 75 + 75 for validation). The
preset writes those images as an ImageFolder tree (PNG) and reads it back with ``shared.imagefolder``, the
loader a user's own tree goes through; the reported test split is all 2,000 CIFAR-10 test images of the two
classes. numpy only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data as data_mod, specs
from .config import register
from .imagefolder import load_imagefolder
from .protocols import Budget
from .recipe import Recipe

HEAD_KINDS = ("linear", "dropout")  # the seed's two heads: a new classifier, or hidden FC + dropout + classifier


@register
@dataclass(frozen=True)
class TransferProtocol:
    # The backbone's pretraining on the source classes (CIFAR-10 indices), with this recipe.
    pretrain_recipe: Recipe = Recipe(epochs=10)
    source_classes: tuple[int, ...] = (0, 1, 2, 4, 6, 7, 8, 9)
    target_classes: tuple[int, ...] = (3, 5)  # cat, dog
    train_per_class: int = 125
    val_per_class: int = 75
    test_per_class: int = 1000  # every CIFAR-10 test image of the class
    # Transfer: the new head trained with the backbone frozen (its BN statistics too: inference mode, Keras'
    # rule for a frozen BN, applied in both suites), then everything fine-tuned at a lower LR. Relative to
    # the preset's recipe (the target's); the two together take as many epochs as training from scratch.
    head_budget: Budget = Budget(0.5, 1.0)
    finetune_budget: Budget = Budget(0.5, 0.1)
    scratch_budget: Budget = Budget(1.0, 1.0, "baseline")  # the preset's whole recipe
    head_hidden: int = 256  # the custom head's hidden FC (at width 1; scaled with the network)
    head_dropout: float = 0.5
    # the head of the baseline (the model the compression techniques start from)
    baseline_head: str = "dropout"

    def __post_init__(self):
        if self.baseline_head not in HEAD_KINDS:
            raise ValueError(f"baseline_head must be one of {', '.join(HEAD_KINDS)}, got {self.baseline_head!r}")
        if set(self.source_classes) & set(self.target_classes):
            raise ValueError("a target class must not be among the source classes the backbone learned")


def head_spec(protocol: TransferProtocol, kind: str, width: float) -> specs.Head | None:
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head {kind!r}: choose one of {', '.join(HEAD_KINDS)}")
    if kind == "linear":
        return None
    return specs.Head(specs.scaled(protocol.head_hidden, width), protocol.head_dropout)


def transfer_state(pretrained: dict, fresh: dict, plan) -> dict:
    """The new network's state (``plan``'s): every backbone tensor from ``pretrained``, the head (the
    modules of ``specs.head_modules``) as freshly built."""
    head = specs.head_modules(plan)
    backbone = {k for k in fresh if k.split(".")[0] not in head}
    missing = sorted(backbone - set(pretrained))
    if missing:
        raise ValueError(f"the pretrained state lacks {len(missing)} backbone tensors of this network "
                         f"({', '.join(missing[:4])}…): it was trained for another architecture or width")
    bad = [k for k in backbone if np.shape(pretrained[k]) != np.shape(fresh[k])]
    if bad:
        raise ValueError(f"the pretrained backbone's shapes differ at {', '.join(sorted(bad)[:4])}: it was "
                         f"trained at another width")
    return {k: (np.asarray(pretrained[k]) if k in backbone else fresh[k]) for k in fresh}


# --- the demonstration's data --------------------------------------------------------------------------

def source_dataset(cifar: data_mod.Dataset, protocol: TransferProtocol) -> data_mod.Dataset:
    """CIFAR-10 restricted to the source classes, labels renumbered 0..7 in the order given."""
    def keep(split):
        mask = np.isin(split.y, protocol.source_classes)
        relabel = {c: i for i, c in enumerate(protocol.source_classes)}
        y = np.array([relabel[int(c)] for c in split.y[mask]], dtype=np.int64)
        names = None if split.names is None else np.asarray(split.names)[mask]
        return data_mod.Split(split.x[mask], y, names)

    return data_mod.Dataset(keep(cifar.train), keep(cifar.val), keep(cifar.test), f"{cifar.source} (source classes)")


def write_target_tree(cifar: data_mod.Dataset, protocol: TransferProtocol, root) -> Path:
    """The held-out classes as ``root/{train,val,test}/<class>/*.png``; written once, atomically (a tree in
    place is kept: its files are the run's data)."""
    from PIL import Image

    root = Path(root)
    if (root / ".complete").is_file():
        return root
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    picks = {"train": (cifar.train, 0, protocol.train_per_class),
             "val": (cifar.train, protocol.train_per_class, protocol.train_per_class + protocol.val_per_class),
             "test": (cifar.test, 0, protocol.test_per_class)}
    for split_name, (split, start, stop) in picks.items():
        for c in protocol.target_classes:
            idx = np.flatnonzero(split.y == c)[start:stop]  # the splits' own (filename-hash) order
            if len(idx) < stop - start:
                raise ValueError(f"CIFAR-10 has {len(idx)} {split_name} images of class {c} for the transfer "
                                 f"tree, {stop - start} needed")
            folder = tmp / split_name / data_mod.CLASSES[c]
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx:
                Image.fromarray(split.x[i]).save(folder / f"{split_name}_{int(i):05d}.png")
    (tmp / ".complete").write_text("written by shared.transfer.write_target_tree\n")
    if root.exists():  # an incomplete tree of a crashed run
        import shutil

        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def target_dataset(cifar: data_mod.Dataset, protocol: TransferProtocol, data_root, log=print) -> data_mod.Dataset:
    """The held-out classes written as an ImageFolder tree under ``data_root`` and read back by the loader a
    user's tree goes through. Training images stay 32x32: the recipe pads and crops them as on CIFAR."""
    root = write_target_tree(cifar, protocol, Path(data_root) / "tree")
    dataset, _ = load_imagefolder(root, specs.INPUT_HW, cache_dir=Path(data_root) / "cache",
                                  train_side=specs.INPUT_HW, log=log)
    return dataset
