"""The shared recipe (shared.recipe) applied with Keras ``fit`` on a tf.data pipeline.

The batches are the ones PyTorch sees (``epoch_orders``); each tf.data element is one batch of indices,
gathered from the padded uint8 set held in memory and augmented as a whole batch.
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from shared import data as shared_data, resume as shared_resume, specs
from shared.progress import EpochProgress
from shared.recipe import Recipe, augmentation_draws, epoch_orders, lr_at, steps_per_epoch

_MEAN = np.asarray(shared_data.MEAN, np.float32) * 255
_STD = np.asarray(shared_data.STD, np.float32) * 255


def on_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def normalise(batch_uint8_nhwc):
    return (tf.cast(batch_uint8_nhwc, tf.float32) - _MEAN) / _STD


class TorchFormSGD(keras.optimizers.SGD):
    """SGD with momentum in PyTorch's form (``shared.conventions.NESTEROV_NOTE``): the buffer holds
    gradients, buf = mu * buf + g, and the step is lr * (g + mu * buf) (Nesterov) or lr * buf, taken at the
    *current* LR. Keras' own form keeps the buffer in LR units (v = mu * v - lr * g), which differs from
    PyTorch's as soon as the LR changes between steps, i.e. on every step of a per-step schedule."""

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices) or not self.momentums:  # no sparse or momentum-free use here
            return super().update_step(gradient, variable)
        lr = tf.cast(self.learning_rate, variable.dtype)
        momentum = tf.cast(self.momentum, variable.dtype)
        buf = self.momentums[self._index_dict[self._var_key(variable)]]
        buf.assign(buf * momentum + gradient)
        variable.assign_sub(lr * (gradient + momentum * buf if self.nesterov else buf))


@keras.saving.register_keras_serializable(package="tensorflow_impl")
class TabulatedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """shared.recipe.lr_at evaluated once per step in numpy, looked up by the optimizer's step counter."""

    def __init__(self, table):
        self.table = tf.constant(np.asarray(table, np.float32))

    def __call__(self, step):
        return tf.gather(self.table, tf.minimum(tf.cast(step, tf.int32), tf.shape(self.table)[0] - 1))

    def get_config(self):
        return {"table": self.table.numpy().tolist()}


def train_pipeline(split: shared_data.Split, recipe: Recipe, seed: int, epochs: int, num_classes: int,
                   start_epoch: int = 0):
    orders = epoch_orders(len(split), epochs, seed, recipe.batch_size)
    draws = augmentation_draws(orders.shape, seed, recipe.crop_padding, recipe.flip)
    # a resumed training starts at its epoch's first batch (fit's initial_epoch does not skip any data)
    per_batch = [a[start_epoch:].reshape(-1, recipe.batch_size) for a in (orders, draws["oy"], draws["ox"], draws["flip"])]
    pad, hw = recipe.crop_padding, split.x.shape[1]
    x = tf.constant(np.pad(split.x, ((0, 0), (pad, pad), (pad, pad), (0, 0))))  # padded once, not per batch
    y = tf.constant(split.y)
    ar = tf.range(hw)

    def augment(idx, oy, ox, flipped):
        batch = tf.gather(x, idx)
        cols = ox[:, None] + ar
        cols = tf.where(flipped[:, None], tf.reverse(cols, axis=[1]), cols)  # a flip is a reversed column index
        batch = tf.gather(batch, oy[:, None] + ar, axis=1, batch_dims=1)
        batch = tf.gather(batch, cols, axis=2, batch_dims=1)
        labels = tf.one_hot(tf.gather(y, idx), num_classes)  # CategoricalCrossentropy smooths one-hot targets
        return normalise(batch), labels

    # the draws are data, not generator state, so batches can be made in parallel and stay in order
    return (tf.data.Dataset.from_tensor_slices(tuple(per_batch))
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE))


def evaluate(model, split: shared_data.Split, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on a split, inference mode, no augmentation."""
    logits = predict_logits(model, split.x, batch_size)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    loss = float(-logp[np.arange(len(split)), split.y].mean())
    return loss, float((logits.argmax(1) == split.y).mean())


def predict_logits(model, x_uint8, batch_size: int) -> np.ndarray:
    infer = getattr(model, "_uint8_infer", None)
    if infer is None:  # traced once per model: one signature for every batch size
        spec = tf.TensorSpec([None, *x_uint8.shape[1:]], tf.uint8)
        infer = model._uint8_infer = tf.function(lambda b: model(normalise(b), training=False), input_signature=[spec])
    return np.concatenate([infer(x_uint8[i : i + batch_size]).numpy() for i in range(0, len(x_uint8), batch_size)]).astype(np.float64)


class _History(keras.callbacks.Callback):
    def __init__(self, dataset, recipe, steps, total, progress, resumed):
        super().__init__()
        self.dataset, self.recipe, self.steps, self.total, self.progress = dataset, recipe, steps, total, progress
        self.resumed = resumed
        self.rows, self.train_time, self.done = list(resumed.history), resumed.train_time, resumed.epoch * steps

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.epoch_start = time.perf_counter(), self.done

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.progress.live:
            self.progress.step(len(self.rows), batch, float(logs.get("ce", 0.0)) if logs else None)

    def on_epoch_end(self, epoch, logs=None):
        epoch_time = time.perf_counter() - self.t0  # validation below is not training time
        self.train_time += epoch_time
        n_steps = self.done - self.epoch_start
        val = self.dataset.val
        val_loss, val_acc = evaluate(self.model, val, self.recipe.eval_batch_size) if len(val) else (None, None)
        row = {
            "epoch": epoch + 1, "steps": n_steps, "lr": float(lr_at(self.done - 1, self.total, self.recipe)),
            # "ce", not "loss": Keras' loss includes the L2 regulariser, PyTorch's logged loss does not
            "train_loss": float(logs["ce"]), "train_acc": float(logs["acc"]),
            "val_loss": val_loss, "val_acc": val_acc, "epoch_time_s": epoch_time,
            "images_per_s": n_steps * self.recipe.batch_size / epoch_time,
        }
        self.rows.append(row)
        self.progress.epoch_end(row)
        self.resumed.commit(epoch + 1, lambda: training_state(self.model), self.rows, self.train_time)


def training_state(model) -> dict[str, np.ndarray]:
    """Every variable of the model (QAT quantizer ranges and pruning wrappers included) and of its optimizer
    (the step counter that indexes the LR table, the momentum buffers), by position: the resumed cell
    rebuilds the same model, but Keras numbers layer names per process."""
    arrays = {f"model/{i}": v.numpy() for i, v in enumerate(model.weights)}
    arrays.update({f"opt/{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
    return arrays


def load_training_state(model, arrays: dict[str, np.ndarray]) -> None:
    model.optimizer.build(model.trainable_variables)  # its buffers exist before fit's first step
    for prefix, variables in (("model", model.weights), ("opt", model.optimizer.variables)):
        saved = sorted((int(k.split("/")[1]), v) for k, v in arrays.items() if k.startswith(prefix + "/"))
        if len(saved) != len(variables):
            raise ValueError(f"epoch checkpoint has {len(saved)} {prefix} variables, the model {len(variables)}")
        for variable, (_, value) in zip(variables, saved):
            variable.assign(value)


class _StepHook(keras.callbacks.Callback):
    """``on_step(step, total)`` after every optimizer step; stops ``fit`` after ``total`` steps (a budget's
    share that ends inside an epoch: Keras checks ``stop_training`` after every batch)."""

    def __init__(self, on_step, total, start: int = 0):
        super().__init__()
        self.on_step, self.total, self.step = on_step, total, start

    def on_train_batch_end(self, batch, logs=None):
        if self.on_step is not None:
            self.on_step(self.step, self.total)
        self.step += 1
        if self.step >= self.total:
            self.model.stop_training = True


@contextlib.contextmanager
def backbone_frozen(model, frozen: bool = True):
    """Only the head (``specs.head_modules``) trains: every other layer ``trainable=False``, which in Keras
    also runs its BN layers in inference mode (the PyTorch suite does the same by hand). ``train`` compiles
    after this, so the change takes effect; the flags are restored after."""
    if not frozen:
        yield
        return
    head = set(specs.head_modules(model.plan))
    layers = [layer for layer in model.layers if layer.weights and layer.name not in head]
    saved = [layer.trainable for layer in layers]
    for layer in layers:
        layer.trainable = False
    try:
        yield
    finally:
        for layer, flag in zip(layers, saved):
            layer.trainable = flag


def train(model, dataset: shared_data.Dataset, recipe: Recipe, seed: int, label: str = "keras",
          callbacks=(), on_step=None, steps: int | None = None, checkpoints=None) -> dict:
    """Train in place with the shared recipe (model built with weight_decay=recipe.weight_decay).

    ``callbacks`` run inside ``fit``; ``on_step(step, total_steps)`` after every optimizer step (pruning
    holds and raises its masks there); ``steps`` stops after that many steps instead of after
    ``recipe.epochs`` whole epochs, the LR schedule spanning those steps (as in the PyTorch suite);
    ``checkpoints`` (``shared.resume.CellCheckpoints``) keeps every finished epoch and resumes after the last.
    """
    keras.utils.set_random_seed(seed)
    n = len(dataset.train)
    num_classes = model.output_shape[-1]
    per_epoch = steps_per_epoch(n, recipe.batch_size)
    total = per_epoch * recipe.epochs if steps is None else int(steps)
    epochs = math.ceil(total / per_epoch)
    schedule = TabulatedSchedule(lr_at(np.arange(total), total, recipe))
    model.compile(
        optimizer=TorchFormSGD(schedule, momentum=recipe.momentum, nesterov=recipe.nesterov),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
        metrics=[
            keras.metrics.CategoricalCrossentropy(name="ce", from_logits=True, label_smoothing=recipe.label_smoothing),
            keras.metrics.CategoricalAccuracy(name="acc"),
        ],
    )
    resumed = shared_resume.begin(checkpoints, recipe=recipe, seed=seed, total_steps=total, epochs=epochs,
                                  n_train=n, label=label, on_step=on_step)
    if resumed.arrays is not None:
        load_training_state(model, resumed.arrays)
    history = _History(dataset, recipe, per_epoch, total, EpochProgress(label, epochs, per_epoch), resumed)
    if resumed.epoch < epochs:
        pipeline = train_pipeline(dataset.train, recipe, seed, epochs, num_classes, resumed.epoch)
        # the step hook first: a mask it applies after a batch is in place before anything else looks
        model.fit(pipeline, epochs=epochs, initial_epoch=resumed.epoch, steps_per_epoch=per_epoch,
                  callbacks=[_StepHook(on_step, total, resumed.epoch * per_epoch), *callbacks, history], verbose=0)
    return {
        "history": history.rows,
        "train_time_s": history.train_time,
        "train_images_per_s": total * recipe.batch_size / history.train_time,
        "device": "gpu" if on_gpu() else "cpu",
    }


def recalibrate_bn(model, x_uint8_nhwc: np.ndarray, batch_size: int) -> None:
    """Every BN's moving statistics set to the plain average of its per-batch mean and unbiased variance
    over fixed batches (PyTorch's momentum=None rule), the batches run in training mode (dropout off) as in
    PyTorch."""
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(model.inputs, [bn.input for bn in bns])
    # dropout off (as in PyTorch's rule): training=True reaches every layer, so the rates are zeroed for the
    # probe's eager calls and restored after
    drops = [(layer, layer.rate) for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    try:
        for layer, _ in drops:
            layer.rate = 0.0
        batches, sums = _batch_moments(probe, x_uint8_nhwc, batch_size, len(bns))
    finally:
        for layer, rate in drops:
            layer.rate = rate
    for bn, (mean_sum, var_sum) in zip(bns, sums):
        bn.moving_mean.assign(mean_sum / batches)
        bn.moving_variance.assign(var_sum / batches)


def _batch_moments(probe, x_uint8_nhwc, batch_size: int, n_outputs: int):
    sums, batches = [None] * n_outputs, 0
    for i in range(0, len(x_uint8_nhwc), batch_size):
        outs = probe(normalise(x_uint8_nhwc[i : i + batch_size]), training=True)
        for j, x in enumerate(outs if isinstance(outs, (list, tuple)) else [outs]):
            axes = list(range(len(x.shape) - 1))
            count = int(np.prod([x.shape[a] for a in axes]))
            mean, var = tf.nn.moments(x, axes)
            stats = (mean.numpy(), var.numpy() * count / max(count - 1, 1))
            sums[j] = stats if sums[j] is None else (sums[j][0] + stats[0], sums[j][1] + stats[1])
        batches += 1
    return batches, sums
