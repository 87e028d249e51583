"""The PyTorch backend: the primitives the shared drivers call (``shared.backend.Backend``), and nothing else.

Quantization runs ``torch.ao.quantization``'s FX path on the x86 engine (``quantization``), filter pruning
Torch-Pruning (``structured``), training the shared recipe on in-memory batches (``train``).
"""
from __future__ import annotations

import torch

from shared import onnx_runtime
from shared.backend import Quantized
from . import artifacts, distill, models, quantization as Q, sparsity, structured, train as T
from .measure import measure
from .published import read_torchvision_file
from .weights import export_state, import_state


class TorchBackend:
    name = "pytorch"

    # networks and weights
    def build(self, arch, *, width=None, widths=None, seed=None, num_classes=10, head=None):
        if seed is not None:
            torch.manual_seed(seed)  # the initial weights are part of the seed, not of the RNG's history
        return models.build(arch, num_classes, width=1.0 if width is None else width, widths=widths, head=head)

    export_state = staticmethod(export_state)
    # ``--pretrained`` torchvision files (``shared.published.read_pretrained``): the tensors-only loader
    read_torch_file = staticmethod(read_torchvision_file)
    import_state = staticmethod(import_state)

    def end_cell(self) -> None:
        import gc

        gc.collect()  # a cell's models are unreachable once its row is written; nothing global to reset
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # training and evaluation
    def train(self, model, dataset, recipe, seed, *, label, steps=None, on_step=None, teacher=None,
              temperature=None, alpha=None, device=None, checkpoints=None, frozen_backbone=False):
        # a QAT model trains on the CPU, where its int8 form runs: convert_fx packs weights for the CPU engine
        device = device or (Q.CPU if getattr(model, "qat_on_cpu", False) else T.pick_device())
        loss_fn = None
        if teacher is not None:
            loss_fn = distill.distillation_loss(distill.frozen(teacher, device), temperature, alpha,
                                                recipe.label_smoothing)
        with T.backbone_frozen(model, frozen_backbone):
            return T.train(model, dataset, recipe, seed, label=label, device=device, loss_fn=loss_fn,
                           on_step=on_step, steps=steps, checkpoints=checkpoints)

    evaluate = staticmethod(T.evaluate)
    recalibrate_bn = staticmethod(T.recalibrate_bn)

    def measure(self, model, dataset, protocol, eval_batch_size):
        return measure(model.to("cpu"), dataset, protocol, eval_batch_size)

    # pruning
    masker = staticmethod(sparsity.Masker)
    sparse_sizes = staticmethod(sparsity.sparse_sizes)

    def prune_filters(self, model, ratios_per_layer):
        return structured.prune_filters(model, ratios_per_layer)

    # quantization and reduced precision
    def _facts(self, **extra):
        return {"backend": Q.BACKEND, "runtime": "pytorch eager (cpu)", **extra}

    def quantize_dynamic(self, model):
        qmodel = Q.quantize_dynamic_linear(model.eval())
        quantized = Q.int8_layers(qmodel)
        return Quantized(qmodel, self._facts(
            quantized_layers=len(quantized), quantized_params=sum(w.numel() for w in quantized.values()),
            quantizable_params=sum(m.weight.numel() for m in Q.float_layers(model).values()),
            activation_bits=None), form="int8_dynamic")

    def quantize_static(self, model, observer, calibration):
        qmodel = Q.quantize_static(model.eval(), observer, Q.as_inputs(calibration))
        return Quantized(qmodel, self._facts(int8_modules=len(Q.int8_layers(qmodel)),
                                             activation_bits=Q.activation_bits()), form="int8_static")

    def prepare_qat(self, model, calibration):
        prepared = Q.prepare_qat(model)
        Q.calibrate_qat(prepared, Q.as_inputs(calibration))
        prepared.qat_on_cpu = True
        prepared.plan = model.plan
        return prepared

    def qat_activation_ranges(self, prepared):
        return Q.qat_activation_ranges(prepared, prepared.plan)

    def convert_qat(self, prepared):
        qmodel = Q.convert_qat(prepared)
        return Quantized(qmodel, self._facts(int8_modules=len(Q.int8_layers(qmodel)),
                                             activation_bits=Q.activation_bits(), bn_folding=Q.QAT_BN_FOLDING),
                         form="int8_static")  # the converted QAT graph is the PTQ graph (same modules, same state)

    def reduced_precision(self, model):
        # autocast casts fp32 weights per call, so the stored artifact is the fp32 state_dict
        return Quantized(Q.Autocast(model.eval()), self._facts(autocast_dtype="bfloat16", saved_model=model,
                                                               params_nonzero=models.count_nonzero(model)),
                         form="bf16_autocast")

    def fixed_point(self, model, bits, calibration):
        fixed, formats = Q.fixed_point_model(model.eval(), bits, Q.as_inputs(calibration))
        weights = sum(m.weight.numel() for m in Q.float_layers(fixed).values())
        return Quantized(fixed, {"qmn_formats": formats, "quantized_weights": weights}, form="simulated")

    def measure_quantized(self, quantized, reference, ctx, cell):
        facts = dict(quantized.facts)
        saved, nonzero = facts.pop("saved_model", None), facts.pop("params_nonzero", None)
        row = Q.metrics(quantized.model, reference, ctx, saved_model=saved, params_nonzero=nonzero)
        return {**row, **facts}

    onnx_toolchain = onnx_runtime  # ORT's quantizer and evaluation, the same for both suites

    def export_onnx(self, model, path):
        from .onnx_export import export

        return export(model, path)

    # artifacts
    def save_artifacts(self, artifact, stem):
        return artifacts.save(artifact, stem)
