"""How long a run will take on this machine: a short measured calibration, then a dry run of the drivers.

``calibrate(backend, preset)`` runs in a suite's own process and times that framework's primitives on
synthetic CIFAR-shaped data: a training step and an evaluated image (each as a fixed cost per call plus a
cost per step or image, from two call sizes), building a network, setting its weights, and a new model's first
evaluation and first training call (Keras builds a graph per model), at the preset's width and the KD
student's, for every architecture; one static int8 conversion and the evaluation of its model; QAT preparation and a QAT step;
saving a float and an int8 artifact. About one (PyTorch) and three (Keras) minutes on a 2-core CPU at the quick preset.

``estimate(preset, framework, cells, calibration)`` then runs the real drivers (``shared.drivers``) over
``CountingBackend``, which does no work but adds up, for every primitive a driver calls, the calibrated
cost of that call on that network (costs between the two calibrated networks are interpolated linearly in
MACs). The estimate therefore follows the drivers as they are written: a new driver, budget or operating
point is estimated without touching this module. What it leaves out: data loading and process start-up
(seconds), and anything else running on the machine.

A calibration is JSON; ``plan --calibration FILE`` uses a stated one instead of measuring (for a machine
other than this one, e.g. a GPU the run will go to: copy the ``calibrate`` output from that machine or
write its figures by hand).
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import data as data_mod, filter_rule, specs, state as neutral
from .backend import Quantized
from .kd import student_width
from .measure import model_row

# The two call sizes of each calibrated primitive (the cost per call is their intercept).
# (Keras' fit costs ~3 s per call: a short second size leaves a small network's per-step cost in the noise.)
STEPS = (4, 32)
QAT_STEPS = (3, 12)
EVAL_BATCHES = (2, 8)


# --------------------------------------------------------------------------------------------- calibration

def _timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def _best_of_two(fn, *args, **kwargs) -> float:
    """The faster of two calls: another process's burst on 2 cores only ever slows a call down."""
    return min(_timed(fn, *args, **kwargs) for _ in range(2))


def _line(small: float, large: float, n_small: int, n_large: int) -> dict:
    """Cost = per_call + per_unit * n through two measured points (clipped at zero: noise on 2 cores)."""
    per_unit = max((large - small) / (n_large - n_small), 1e-9)
    return {"per_call_s": max(small - per_unit * n_small, 0.0), "per_unit_s": per_unit}


def calibrate(backend, preset, log=print) -> dict:
    """The calibration of ``backend``'s framework on this machine for ``preset`` (JSON-able)."""
    recipe = preset.recipe
    bs, ebs = recipe.batch_size, recipe.eval_batch_size
    # as many training images as the preset's: a batch gathered from 45k padded images misses the caches
    # that a few hundred would fit in (1,400 vs 1,100 img/s measured for VGG-16 at width 0.25 here)
    n_train = len(sized_dataset(preset).train)
    rng = np.random.default_rng(0)
    train_split = data_mod.Split(rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
                                 np.arange(n_train, dtype=np.int64) % data_mod.NUM_CLASSES)
    empty = data_mod.Split(train_split.x[:0], train_split.y[:0])
    train_data = data_mod.Dataset(train_split, empty, empty, "synthetic")
    eval_split = data_mod.synthetic(n_train=ebs * max(EVAL_BATCHES), n_val=0, n_test=0, seed=1).train
    out = {"framework": backend.name, "preset": preset.name, "batch_size": bs, "eval_batch_size": ebs,
           "networks": {}, "int8": {}}
    for arch in preset.archs:
        nets = []
        for width in sorted({preset.width, student_width(preset.width, preset.protocol)}):
            log(f"calibrating {backend.name} {arch} at width {width:g}: training and evaluation throughput")
            t0 = time.perf_counter()
            model = backend.build(arch, width=width, seed=0)
            build_s = time.perf_counter() - t0
            import_s = _timed(backend.import_state, model, backend.export_state(model))
            small, large = (data_mod.Split(eval_split.x[:ebs * n], eval_split.y[:ebs * n]) for n in EVAL_BATCHES)
            first = _timed(backend.evaluate, model, small, ebs)  # a new model's first call: Keras traces it
            eval_s = [_best_of_two(backend.evaluate, model, split, ebs) for split in (small, large)]
            # a new model's first training call: Keras builds its training graph and optimizer slots once per
            # model (its later calls only retrace); every cell trains a model it has just built
            first_train = _timed(backend.train, model, train_data, recipe, 0, label="calibration", steps=1)
            train_s = [_best_of_two(backend.train, model, train_data, recipe, 0, label="calibration", steps=n)
                       for n in STEPS]
            line = _line(*train_s, *STEPS)
            nets.append({"width": width, "macs": specs.count_macs(model.plan), "train_step": line,
                         "eval_image": _line(*eval_s, ebs * EVAL_BATCHES[0], ebs * EVAL_BATCHES[1]),
                         "first_eval_s": max(first - eval_s[0], 0.0), "build_s": build_s, "import_state_s": import_s,
                         "first_train_s": max(first_train - line["per_call_s"] - line["per_unit_s"], 0.0)})
        out["networks"][arch] = nets
        log(f"calibrating {backend.name} {arch}: an int8 conversion, its evaluation, QAT, artifacts")
        out["int8"][arch] = _calibrate_int8(backend, preset, arch, train_data, eval_split)
    return out


def _calibrate_int8(backend, preset, arch, train_data, eval_split) -> dict:
    from .drivers.common import calibration_batches
    from .runner import Cell, RunContext

    recipe, ebs = preset.recipe, preset.recipe.eval_batch_size
    model = backend.build(arch, width=preset.width, seed=0)
    n_cal = min(preset.protocol.calibration_sizes)
    calib = data_mod.Split(eval_split.x[:n_cal], eval_split.y[:n_cal])
    t0 = time.perf_counter()
    quantized = backend.quantize_static(model, "minmax", calibration_batches(calib, n_cal, ebs))
    convert_s = time.perf_counter() - t0
    split = data_mod.Split(eval_split.x, eval_split.y)
    ctx = RunContext(preset=preset, out_dir=Path(tempfile.gettempdir()), log=lambda _: None,
                     _dataset=data_mod.Dataset(split, split, split, "synthetic"))
    cell = Cell(backend.name, arch, "int8_static", 0, {"observer": "minmax", "calibration_images": n_cal})
    measure_s = _timed(backend.measure_quantized, quantized, model, ctx, cell)  # test + val: 2 x the split
    none = data_mod.Split(split.x[:0], split.y[:0])
    sizes_s = _timed(backend.measure, model, data_mod.Dataset(none, none, none, "synthetic"), preset.measure, ebs)
    sparse_s = _timed(backend.sparse_sizes, model, preset.measure.gzip_level)
    with tempfile.TemporaryDirectory() as tmp:
        float_s = _timed(backend.save_artifacts, model, Path(tmp) / "float")
        int8_s = _timed(backend.save_artifacts, quantized, Path(tmp) / "int8")
    t0 = time.perf_counter()
    prepared = backend.prepare_qat(model, calibration_batches(calib, n_cal, ebs))
    prepare_s = time.perf_counter() - t0
    qat_s = [_best_of_two(backend.train, prepared, train_data, recipe, 0, label="calibration", steps=n)
             for n in QAT_STEPS]
    return {"convert_s": convert_s, "eval_image_s": measure_s / (2 * len(split)), "prepare_qat_s": prepare_s,
            "qat_step": _line(*qat_s, *QAT_STEPS), "artifact_float_s": float_s, "artifact_int8_s": int8_s,
            "model_sizes_s": sizes_s, "sparse_sizes_s": sparse_s}


# ----------------------------------------------------------------------------------------- the dry run

@dataclass
class FakeNet:
    """What ``CountingBackend`` builds: a width spec and its plan, no weights."""

    arch: str
    widths: tuple
    num_classes: int = 10
    head: object = None
    qat: bool = False
    plan: object = field(init=False, repr=False)

    def __post_init__(self):
        self.plan = specs.plan(self.arch, self.num_classes, widths=self.widths, head=self.head)

    @property
    def macs(self) -> int:
        return specs.count_macs(self.plan)


class _NoMasks:
    def set(self, masks):
        pass

    def apply(self):
        pass


class CountingBackend:
    """The backend interface (``shared.backend.Backend``) with the calibrated cost of each call instead of
    its work; ``seconds`` is the running total. Accuracies are a constant, so a choice the drivers make on
    the validation split takes the same number of probes as for real."""

    def __init__(self, calibration: dict):
        self.cal, self.name, self.seconds = calibration, calibration["framework"], 0.0
        self._seen: dict[int, FakeNet] = {}
        self._trained: dict[int, FakeNet] = {}

    # cost model
    def _interp(self, arch: str, macs: int, key: str, n: float) -> float:
        nets = sorted(self.cal["networks"][arch], key=lambda p: p["macs"])
        (a, b) = (nets[0], nets[-1])

        def cost(p):
            return p[key]["per_call_s"] + p[key]["per_unit_s"] * n

        if a["macs"] == b["macs"]:
            return cost(b) * (macs / b["macs"])
        t = (macs - a["macs"]) / (b["macs"] - a["macs"])
        return max(cost(a) + t * (cost(b) - cost(a)), 0.0)

    def _eval(self, model, n_images: int) -> None:
        if n_images:
            self.seconds += self._interp(model.arch, model.macs, "eval_image", n_images)
            if id(model) not in self._seen:  # its first evaluation (Keras traces a new model once)
                self._seen[id(model)] = model  # held, so the id is never reused by another model
                self.seconds += max(p["first_eval_s"] for p in self.cal["networks"][model.arch])

    # networks and weights
    def _per_model(self, arch: str, key: str) -> float:
        """A per-model cost (building a network, setting its weights): the calibrated networks' mean; it
        follows the layer count, not the MACs (absent from older calibrations: 0)."""
        return float(np.mean([p.get(key, 0.0) for p in self.cal["networks"][arch]]))

    def build(self, arch, *, width=None, widths=None, seed=None, num_classes=10, head=None):
        self.seconds += self._per_model(arch, "build_s")
        return FakeNet(arch, specs.resolve_widths(arch, 1.0 if width is None else width, widths), num_classes, head)

    def export_state(self, model):
        return {k: np.zeros(v, np.float32) for k, v in neutral.expected_shapes(model.plan).items()}

    def import_state(self, model, state):
        self.seconds += self._per_model(model.arch, "import_state_s")
        return model

    def end_cell(self):
        pass

    # training and evaluation
    def train(self, model, dataset, recipe, seed, *, label, steps=None, on_step=None, teacher=None,
              temperature=None, alpha=None, checkpoints=None, frozen_backbone=False):
        from .recipe import steps_per_epoch

        per_epoch = steps_per_epoch(len(dataset.train), recipe.batch_size)
        total = per_epoch * recipe.epochs if steps is None else int(steps)
        epochs = -(-total // per_epoch)
        before = self.seconds
        if id(model) not in self._trained:  # its first training call (a calibration without it: none)
            self._trained[id(model)] = model  # held, so the id is never reused by another model
            # the first network measured in a process also paid the process's warm-up: the smallest is the model's
            self.seconds += min(p.get("first_train_s", 0.0) for p in self.cal["networks"][model.arch])
        if model.qat:
            line = self.cal["int8"][model.arch]["qat_step"]
            self.seconds += line["per_call_s"] + line["per_unit_s"] * total
        else:
            self.seconds += self._interp(model.arch, model.macs, "train_step", total)
        if teacher is not None:  # the teacher's forward pass on every training batch
            self._eval(teacher, total * recipe.batch_size)
        for _ in range(epochs):
            self._eval(model, len(dataset.val))
        history = [{"epoch": e + 1, "val_acc": 0.5, "train_acc": 0.5, "train_loss": 1.0} for e in range(epochs)]
        return {"history": history, "train_time_s": self.seconds - before, "train_images_per_s": 0.0,
                "device": "estimate"}

    def evaluate(self, model, split, batch_size):
        self._eval(model, len(split))
        return 1.0, 0.5

    def recalibrate_bn(self, model, x_uint8, batch_size):
        self._eval(model, len(x_uint8))

    def measure(self, model, dataset, protocol, eval_batch_size):
        self._eval(model, len(dataset.test) + len(dataset.val))
        self.seconds += self.cal["int8"][model.arch].get("model_sizes_s", 0.0)  # serialised and gzipped
        return self._row(model)

    def _row(self, model):
        n = specs.count_params(model.plan)
        return model_row(test_acc=0.5, val_acc=0.5, params_total=n, params_nonzero=n, plan=model.plan,
                         sizes={"size_bytes": 4 * n, "size_gzip_bytes": 4 * n}, widths=model.widths)

    # pruning
    def masker(self, model):
        return _NoMasks()

    def sparse_sizes(self, model, gzip_level):
        self.seconds += self.cal["int8"][model.arch].get("sparse_sizes_s", 0.0)
        return {}

    def prune_filters(self, model, ratios_per_layer):
        widths, kept = filter_rule.prune_plan(self.export_state(model), model.arch, model.widths, ratios_per_layer)
        return FakeNet(model.arch, tuple(widths), model.num_classes, model.head), kept

    # quantization
    def _convert(self, model, calibration=()) -> Quantized:
        for batch in calibration:
            self._eval(model, len(batch))
        self.seconds += self.cal["int8"][model.arch]["convert_s"]
        n = specs.count_params(model.plan)
        return Quantized(model, {"quantized_weights": n}, form="estimate")

    def quantize_dynamic(self, model):
        return self._convert(model)

    def quantize_static(self, model, observer, calibration):
        return self._convert(model, calibration)

    def reduced_precision(self, model):
        return self._convert(model)

    def fixed_point(self, model, bits, calibration):
        return self._convert(model, calibration)

    def prepare_qat(self, model, calibration):
        for batch in calibration:
            self._eval(model, len(batch))
        self.seconds += self.cal["int8"][model.arch]["prepare_qat_s"]
        return replace(model, qat=True)

    def qat_activation_ranges(self, prepared):
        return {}

    def convert_qat(self, prepared):
        return self._convert(replace(prepared, qat=False))

    def measure_quantized(self, quantized, reference, ctx, cell):
        model = quantized.model
        self.seconds += self.cal["int8"][model.arch]["eval_image_s"] * (len(ctx.dataset.test) + len(ctx.dataset.val))
        return self._row(model)

    def export_onnx(self, model, path):
        self.seconds += self.cal["int8"][model.arch]["artifact_float_s"]  # an export is what an artifact costs
        self._exported = model
        return {"file": Path(path).name, "layout": "NCHW", "exporter": "estimate"}

    @property
    def onnx_toolchain(self):
        return _CountingOrt(self)

    def artifact(self, measured) -> None:
        """The runner saves every cell's measured model: a Keras float row converts a TFLite file too."""
        int8 = self.cal["int8"]
        if isinstance(measured, Quantized):
            arch = getattr(measured.model, "arch", None) or self._exported.arch  # ORT's int8: bytes
            self.seconds += int8[arch]["artifact_int8_s"]
        elif measured is not None:
            self.seconds += int8[measured.arch]["artifact_float_s"]


class _CountingOrt:
    """ORT's quantizer and evaluation, priced as the framework's own conversion and int8 evaluation."""

    def __init__(self, backend: CountingBackend):
        self.backend = backend

    def quantize_static(self, path, layout, calibration) -> bytes:
        self.backend._convert(self.backend._exported, calibration)
        return b""

    def accuracy(self, path, layout, split, batch_size) -> float:
        self.backend.seconds += self.backend.cal["int8"][self.backend._exported.arch]["eval_image_s"] * len(split)
        return 0.5


def sized_dataset(preset) -> data_mod.Dataset:
    """Zero images of the preset's split sizes: what the drivers see of the data is only its size."""
    if preset.data == "synthetic":
        sizes = preset.synthetic_sizes
    else:
        n_train = preset.train_subset or 50000 - preset.val_size
        sizes = (n_train, preset.val_size, 10000)

    def split(n):
        return data_mod.Split(np.zeros((n, 32, 32, 3), np.uint8), np.arange(n, dtype=np.int64) % data_mod.NUM_CLASSES)

    return data_mod.Dataset(*(split(n) for n in sizes), source="estimate")


def estimate(preset, calibration: dict, cells, count) -> dict[str, float]:
    """Seconds per cell id for the cells whose ``count(cell)`` is true; every cell of ``cells`` (in plan
    order) is dry-run, so the checkpoints later cells load exist, as in a real run."""
    from .drivers import REGISTRY
    from .runner import RunContext

    backend = CountingBackend(calibration)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(preset=preset, out_dir=Path(tmp), log=lambda _: None, _dataset=sized_dataset(preset))
        for cell in cells:
            before = backend.seconds
            ctx.measured_model = None
            REGISTRY[cell.technique](backend, ctx, cell)
            backend.artifact(ctx.measured_model)
            if count(cell):
                out[cell.id] = backend.seconds - before
    return out


def macs_calibration(preset, framework: str, seconds_per_gmac: float = 1.0) -> dict:
    """A calibration priced in MACs alone (a training step 3x an inference, no fixed costs): no machine's
    figures, but the dry run over it orders cells by length (the Ray executor's longest-first)."""
    unit = seconds_per_gmac * 1e-9
    out = {"framework": framework, "preset": preset.name, "networks": {}, "int8": {}}
    for arch in preset.archs:
        nets = []
        for width in sorted({preset.width, student_width(preset.width, preset.protocol)}):
            macs = specs.count_macs(specs.plan(arch, 10, widths=specs.resolve_widths(arch, width, None)))
            step = {"per_call_s": 0.0, "per_unit_s": 3 * macs * unit * preset.recipe.batch_size}
            nets.append({"width": width, "macs": macs, "train_step": step,
                         "eval_image": {"per_call_s": 0.0, "per_unit_s": macs * unit}, "first_eval_s": 0.0})
        macs = nets[-1]["macs"]
        out["networks"][arch] = nets
        out["int8"][arch] = {"convert_s": 0.0, "eval_image_s": macs * unit, "prepare_qat_s": 0.0,
                             "qat_step": {"per_call_s": 0.0, "per_unit_s": 6 * macs * unit * preset.recipe.batch_size},
                             "artifact_float_s": 0.0, "artifact_int8_s": 0.0}
    return out


def load_calibration(path) -> dict:
    data = json.loads(Path(path).read_text())
    for key in ("framework", "networks", "int8"):
        if key not in data:
            raise ValueError(f"{path} is not a calibration (no {key!r}): write it with "
                             f"python -m pytorch_impl calibrate --preset P > FILE (or tensorflow_impl)")
    return data
