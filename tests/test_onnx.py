"""ONNX Runtime, the one runtime for both frameworks (shared.onnx_runtime): every float export gives its source
framework's logits (<= 1e-4) for both architectures, pruned and filter-pruned too; identical neutral weights
exported from PyTorch and from Keras give the same logits on ORT; TFLite's int8 graph on ORT computes what
LiteRT computes; the timing pass feeds each export its own layout."""
import numpy as np
import pytest

from shared import onnx_runtime, provenance
from shared.filter_rule import uniform_layer_ratios
from shared.masks import apply_masks, global_masks

WIDTH = 0.0625
ARCHS = ("vgg16", "resnet18")


def _with_stats(state, seed=0):
    """Randomised BN statistics: an eval-mode export must carry them, not the identity defaults."""
    rng = np.random.default_rng(seed)
    out = dict(state)
    for k in state:
        if k.endswith("running_mean"):
            out[k] = rng.normal(0, 0.1, state[k].shape).astype(np.float32)
        elif k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 2.0, state[k].shape).astype(np.float32)
    return out


def _pt_logits(model, x_nhwc):
    import torch

    with torch.no_grad():
        return model.eval()(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous()).numpy()


def _variants(backend, arch):
    """(name, model): a network, its 50% global-pruned copy and its filter-pruned (narrower) copy."""
    model = backend.build(arch, width=WIDTH, seed=0)
    state = _with_stats(backend.export_state(model))
    model = backend.import_state(model, state)
    pruned = backend.import_state(backend.build(arch, width=WIDTH), apply_masks(state, global_masks(state, arch, 0.5)))
    narrow, _ = backend.prune_filters(backend.import_state(backend.build(arch, width=WIDTH), state),
                                      uniform_layer_ratios(arch, 0.5))
    return [("fp32", model), ("pruned", pruned), ("filter_pruned", narrow)]


def _tf_logits(model, x_nhwc):
    return model(x_nhwc, training=False).numpy()


SUITES = {  # framework -> (backend fixture, exporter module, layout, source logits)
    "pytorch": ("pt_backend", "pytorch_impl.onnx_export", "NCHW", _pt_logits),
    "keras": ("tf_backend", "tensorflow_impl.onnx_export", "NHWC", _tf_logits),
}


@pytest.mark.parametrize("framework", SUITES)
@pytest.mark.parametrize("arch", ARCHS)
def test_float_exports_match_their_source_framework(framework, arch, tmp_path, request):
    import importlib

    fixture, module, layout, source_logits = SUITES[framework]
    backend, export = request.getfixturevalue(fixture), importlib.import_module(module).export
    x = onnx_runtime.probe_batch(5, seed=3)
    for name, model in _variants(backend, arch):
        entry = export(model, tmp_path / f"{name}.onnx")
        assert entry["layout"] == layout and entry["parity_max_abs"] <= onnx_runtime.PARITY_TOL
        got = onnx_runtime.OrtRunner(tmp_path / entry["file"], 2, layout).logits(x)
        np.testing.assert_allclose(got, source_logits(model, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("framework", SUITES)
def test_an_imagenet_network_exports_at_its_own_input_size(framework, tmp_path, request):
    import importlib

    fixture, module, layout, source_logits = SUITES[framework]
    backend, export = request.getfixturevalue(fixture), importlib.import_module(module).export
    model = backend.build("resnet50", width=WIDTH, seed=0)
    entry = export(model, tmp_path / "r50.onnx")  # its parity probe is 224 x 224, or the export fails
    x = onnx_runtime.probe_batch(2, seed=3, hw=224)
    runner = onnx_runtime.OrtRunner(tmp_path / entry["file"], 2, layout)
    assert runner.session.get_inputs()[0].shape[1:] == ([3, 224, 224] if layout == "NCHW" else [224, 224, 3])
    np.testing.assert_allclose(runner.logits(x), source_logits(model, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_identical_weights_exported_from_both_frameworks_agree_on_ort(pt_backend, tf_backend, arch, tmp_path):
    """The same-runtime comparison's premise: the two exporters' graphs compute the same function."""
    from pytorch_impl.onnx_export import export as pt_export
    from tensorflow_impl.onnx_export import export as tf_export

    state = _with_stats(pt_backend.export_state(pt_backend.build(arch, width=WIDTH, seed=0)))
    pt_model = pt_backend.import_state(pt_backend.build(arch, width=WIDTH), state)
    tf_model = tf_backend.import_state(tf_backend.build(arch, width=WIDTH), state)
    pt_export(pt_model, tmp_path / "pt.onnx")
    tf_export(tf_model, tmp_path / "tf.onnx")
    x = onnx_runtime.probe_batch(6, seed=7)
    a = onnx_runtime.OrtRunner(tmp_path / "pt.onnx", 2, "NCHW").logits(x)
    b = onnx_runtime.OrtRunner(tmp_path / "tf.onnx", 2, "NHWC").logits(x)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_tflite_int8_on_ort_computes_what_litert_computes(tf_backend, tmp_path):
    from tensorflow_impl import tflite
    from tensorflow_impl.onnx_export import export_tflite

    model = tf_backend.build("resnet18", width=WIDTH, seed=0)
    calibration = [onnx_runtime.probe_batch(16, seed=1)]
    quantized = tf_backend.quantize_static(model, "minmax", calibration)
    entry = export_tflite(quantized.model, tmp_path / "int8.onnx", "onnx_from_tflite_int8", "int8")
    x = onnx_runtime.probe_batch(8, seed=2)
    lite = np.asarray(tflite.LiteModel(quantized.model, 1).logits(x))
    assert entry["quantization"]["input"][2] == "int8"  # quantized inside the timed call, as on LiteRT
    ort = onnx_runtime.OrtRunner(tmp_path / entry["file"], 2, "NHWC", entry["quantization"]).logits(x)
    step = float(np.max(np.abs(lite))) / 127  # one output quantization step
    # Two int8 runtimes round their requantizations differently, and an off-by-one step in one layer carries
    # through the rest: measured 1.5 steps apart on an AVX2-only EPYC (ORT sums u8 x s8 pairs in saturating
    # 16-bit lanes there), within 1 on a Zen 5 with AVX-512 VNNI, 1.48 on a Xeon with AMX. Two steps bound
    # them all.
    allowed = 2 * step
    assert entry["parity_max_abs"] <= allowed and np.max(np.abs(ort - lite)) <= allowed
    assert (ort.argmax(1) == lite.argmax(1)).mean() >= 0.75


def test_a_failed_export_costs_only_the_onnx_entry():
    def broken():
        raise RuntimeError("unsupported op")

    entry = onnx_runtime.exported(broken)
    assert entry == {"reason": "ONNX export failed: RuntimeError: unsupported op"}


def test_an_fp32_export_off_by_more_than_the_tolerance_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"differs from its source model by 0.01 .*not timed"):
        onnx_runtime.entry(tmp_path / "m.onnx", "onnx_fp32", "fp32", "NCHW", "x", 0.01)


@pytest.mark.parametrize("framework", SUITES)
def test_ort_int8_quantizer_runs_on_either_frameworks_export(framework, request, tmp_path):
    """ORT's static quantizer (QDQ, S8S8, per-channel) on the trained smoke baseline: int8 weights in the
    graph, the fp32 export's predictions kept (argmax agreement on probe images, whatever the baseline learned),
    accuracy measured on ORT within 1 point of the fp32 export's (for Keras only where its smoke baseline is
    above 30%: its 16 smoke steps can leave it near chance), and an artifact
    the timing pass times on ORT."""
    import onnx

    from shared import artifacts
    from shared.drivers import REGISTRY
    from shared.runner import Cell

    ctx = request.getfixturevalue("pt_smoke_ctx" if framework == "pytorch" else "tf_smoke_ctx")
    backend = request.getfixturevalue(SUITES[framework][0])
    cell = Cell(backend.name, "resnet18", "int8_ort", 0, {"observer": "minmax", "calibration_images": 64}, "fp")
    row = REGISTRY["int8_ort"](backend, ctx, cell)
    assert row["runs_on"] == "onnxruntime" and row["activation_bits"] == 8
    if framework == "pytorch" or row["fp32_test_acc"] > 0.3:  # Keras' 16 smoke steps can leave it near chance
        assert abs(row["test_acc"] - row["fp32_test_acc"]) <= 0.01, row
    sidecar = artifacts.save(backend, ctx.measured_model, tmp_path, cell, "smoke", row["widths"])
    entry = sidecar["runtimes"]["onnxruntime"]
    assert list(sidecar["runtimes"]) == ["onnxruntime"] and entry["form"] == "onnx_int8"
    graph = onnx.load(str(artifacts.artifact_dir(tmp_path) / entry["file"])).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20  # every conv's and the classifier's weights are stored as int8
    from shared.drivers.common import load_baseline

    fp32 = backend.export_onnx(load_baseline(backend, ctx, cell), tmp_path / "fp32.onnx")
    x = onnx_runtime.probe_batch(64, seed=5)
    a = onnx_runtime.OrtRunner(tmp_path / fp32["file"], 2, fp32["layout"]).logits(x)
    b = onnx_runtime.OrtRunner(artifacts.artifact_dir(tmp_path) / entry["file"], 2, entry["layout"]).logits(x)
    # 0.86 measured for PyTorch's near-chance smoke baseline on an AVX2-only CPU (small logit margins, ORT's
    # non-VNNI int8 kernels), >= 0.9 on AVX-512 VNNI; a broken quantization agrees at chance level (~0.1-0.3)
    vnni = {"avx512_vnni", "avx_vnni"} & set(provenance.cpu_info()["cpu_flags"])
    assert (a.argmax(1) == b.argmax(1)).mean() >= (0.9 if vnni else 0.8)
