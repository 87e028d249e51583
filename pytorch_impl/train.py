"""The shared recipe (shared.recipe) applied in PyTorch: data on device, augmentation on whole batches.

Like airbench, the whole uint8 training set lives on the device, already padded for the random crop, and
a batch is cropped, flipped and normalised with a handful of tensor ops: no DataLoader, no per-image PIL.
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from shared import data as shared_data, resume as shared_resume, specs
from shared.progress import EpochProgress
from shared.recipe import Recipe, augmentation_draws, epoch_orders, lr_at, steps_per_epoch


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class BatchAugmenter:
    """Random crop from a zero-padded image and horizontal flip, for a whole index batch at once, with the
    shared draws (``shared.recipe.augmentation_draws``) of that batch."""

    def __init__(self, x_uint8_nhwc: np.ndarray, pad: int, device):
        x = torch.from_numpy(x_uint8_nhwc).to(device)
        self.x = F.pad(x, (0, 0, pad, pad, pad, pad)) if pad else x  # pad H and W once, not per batch
        self.pad = pad
        self.ar = torch.arange(x_uint8_nhwc.shape[1], device=device)
        self.mean, self.std = _norm_constants(device)

    def __call__(self, idx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        rows = (oy[:, None] + self.ar)[:, :, None]
        cols = (ox[:, None] + self.ar)[:, None, :]
        # a flip is a reversed column index: no extra copy of the batch
        cols = torch.where(flipped[:, None, None], cols.flip(-1), cols)
        return to_model_input(self.x[idx[:, None, None], rows, cols], self.mean, self.std)


def _norm_constants(device):
    mean = torch.tensor(shared_data.MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(shared_data.STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def to_model_input(batch_uint8_nhwc: torch.Tensor, mean, std) -> torch.Tensor:
    # NHWC uint8 -> NCHW float32 whose memory stays NHWC (channels_last), the fast layout for oneDNN/cuDNN.
    x = batch_uint8_nhwc.permute(0, 3, 1, 2).float()
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def backbone_frozen(model: torch.nn.Module, frozen: bool = True):
    """Only the head (``specs.head_modules``) trains, the backbone's BN layers in inference mode (Keras'
    rule for a frozen BN, which the Keras suite gets from ``trainable=False``): the frozen network computes
    exactly what it will compute at test time. ``train`` keeps them so across its ``model.train()`` calls."""
    if not frozen:
        yield
        return
    head = set(specs.head_modules(model.plan))
    frozen_params = [p for n, p in model.named_parameters() if n.split(".")[0] not in head]
    frozen_bns = [m for n, m in model.named_modules()
                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and n.split(".")[0] not in head]
    for p in frozen_params:
        p.requires_grad_(False)
    model.frozen_bns = frozen_bns
    try:
        yield
    finally:
        for p in frozen_params:
            p.requires_grad_(True)
        del model.frozen_bns


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.SGD:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:  # a frozen backbone: neither stepped nor decayed
            continue
        # conv/linear weights only (see shared.conventions): biases and BN gamma/beta are not decayed
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0)


def autocast(device: torch.device):
    # bf16 autocast on GPU (no loss scaling needed, unlike fp16); fp32 on CPU for training.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(model, split: shared_data.Split, batch_size: int, device=None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on a split, eval mode, no augmentation."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    mean, std = _norm_constants(device)
    x_all = torch.from_numpy(split.x).to(device)
    y_all = torch.from_numpy(split.y).to(device)
    loss_sum, correct = 0.0, 0
    for i in range(0, len(split), batch_size):
        with autocast(device):
            logits = model(to_model_input(x_all[i : i + batch_size], mean, std)).float()
        y = y_all[i : i + batch_size]
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    return loss_sum / len(split), correct / len(split)


def train(model, dataset: shared_data.Dataset, recipe: Recipe, seed: int, label: str = "pytorch",
          device=None, loss_fn=None, on_step=None, steps: int | None = None, checkpoints=None) -> dict:
    """Train in place with the shared recipe; return the history and throughput.

    ``loss_fn(logits, y, x)`` replaces the label-smoothed cross-entropy (knowledge distillation needs the
    augmented batch ``x`` for its teacher); ``on_step(step, total_steps)`` runs after every optimizer step
    (pruning holds and raises its masks there); ``steps`` stops after that many steps instead of after
    ``recipe.epochs`` whole epochs (a share of a budget), the LR schedule spanning those steps;
    ``checkpoints`` (``shared.resume.CellCheckpoints``) keeps every finished epoch and resumes after the last.
    """
    device = device or pick_device()
    torch.manual_seed(seed)
    model.to(device).to(memory_format=torch.channels_last)
    n = len(dataset.train)
    per_epoch = steps_per_epoch(n, recipe.batch_size)
    total = per_epoch * recipe.epochs if steps is None else int(steps)
    epochs = math.ceil(total / per_epoch)
    orders_np = epoch_orders(n, epochs, seed, recipe.batch_size)
    orders = torch.from_numpy(orders_np).to(device)
    draws = {k: torch.from_numpy(v).to(device) for k, v in
             augmentation_draws(orders_np.shape, seed, recipe.crop_padding, recipe.flip).items()}
    augment = BatchAugmenter(dataset.train.x, recipe.crop_padding, device)
    y_all = torch.from_numpy(dataset.train.y).to(device)
    opt = make_optimizer(model, recipe)
    progress = EpochProgress(label, epochs, per_epoch)
    resumed = shared_resume.begin(checkpoints, recipe=recipe, seed=seed, total_steps=total, epochs=epochs,
                                  n_train=n, label=label, on_step=on_step)
    if resumed.arrays is not None:
        load_training_state(model, opt, resumed.arrays)
    history, train_time = list(resumed.history), resumed.train_time
    for epoch in range(resumed.epoch, epochs):
        model.train()
        for bn in getattr(model, "frozen_bns", ()):
            bn.eval()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        n_steps = min(per_epoch, total - epoch * per_epoch)
        for step in range(n_steps):
            global_step = epoch * per_epoch + step
            lr = float(lr_at(global_step, total, recipe))
            for g in opt.param_groups:
                g["lr"] = lr
            batch = slice(step * recipe.batch_size, (step + 1) * recipe.batch_size)
            idx = orders[epoch, batch]
            x, y = augment(idx, draws["oy"][epoch, batch], draws["ox"][epoch, batch], draws["flip"][epoch, batch]), y_all[idx]
            with autocast(device):
                logits = model(x)
            if loss_fn is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
            else:
                loss = loss_fn(logits.float(), y, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step(global_step, total)
            # accumulate on device: a .item() per step would synchronise the GPU every step
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == y).sum()
            progress.step(epoch, step, loss.item() if progress.live else None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        val_loss, val_acc = evaluate(model, dataset.val, recipe.eval_batch_size, device) if len(dataset.val) else (None, None)
        row = {
            "epoch": epoch + 1, "steps": n_steps, "lr": lr, "train_loss": loss_sum.item() / n_steps,
            "train_acc": correct.item() / (n_steps * recipe.batch_size), "val_loss": val_loss, "val_acc": val_acc,
            "epoch_time_s": epoch_time, "images_per_s": n_steps * recipe.batch_size / epoch_time,
        }
        history.append(row)
        progress.epoch_end(row)
        resumed.commit(epoch + 1, lambda: training_state(model, opt), history, train_time)
    return {
        "history": history,
        "train_time_s": train_time,
        "train_images_per_s": total * recipe.batch_size / train_time,
        "device": str(device),
    }


def training_state(model, opt) -> dict[str, np.ndarray]:
    """Everything a resumed epoch needs: every parameter and buffer (observers and fake-quant ranges of a
    QAT model included), SGD's momentum buffers, and the global RNG (no layer draws from it today)."""
    arrays = {f"model/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    for i, state in opt.state_dict()["state"].items():
        arrays.update({f"opt/{i}/{k}": v.detach().cpu().numpy() for k, v in state.items() if torch.is_tensor(v)})
    arrays["rng/torch"] = torch.get_rng_state().numpy()
    return arrays


def load_training_state(model, opt, arrays: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k[len("model/"):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("model/")})
    saved = opt.state_dict()
    device = next(model.parameters()).device
    state: dict = {}
    for key, v in arrays.items():
        if key.startswith("opt/"):
            _, i, name = key.split("/", 2)
            state.setdefault(int(i), {})[name] = torch.from_numpy(v).to(device)
    opt.load_state_dict({**saved, "state": state})
    torch.set_rng_state(torch.from_numpy(arrays["rng/torch"]))


@torch.no_grad()
def recalibrate_bn(model, x_uint8_nhwc: np.ndarray, batch_size: int, device=None) -> None:
    """Re-estimate every BN's running statistics as the cumulative average over fixed batches (momentum
    None), BN in training mode (dropout off) without gradients; the rest of the model is untouched."""
    device = device or next(model.parameters()).device
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    was_training = model.training
    model.train()
    for m in model.modules():  # the statistics of the network as it runs at inference: no dropout masks
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    mean, std = _norm_constants(device)
    x_all = torch.from_numpy(x_uint8_nhwc).to(device)
    try:
        for i in range(0, len(x_all), batch_size):
            model(to_model_input(x_all[i : i + batch_size], mean, std))
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m
        model.train(was_training)
