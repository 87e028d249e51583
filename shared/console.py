"""What a run prints: quiet by default (our progress lines, warnings that matter), everything with --verbose.

The one place where known-harmless library noise is filtered, each entry with why it is harmless.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

VERBOSE_ENV = "CNN_STUDY_VERBOSE"

# (message regex, category, why it is harmless here)
HARMLESS_WARNINGS = (
    ("Statistics for quantized inputs were expected", UserWarning,
     "TFLite's converter on a tfmot QAT model: its input range comes from the QAT wrapper, not from statistics"),
    ("Sparse CSR tensor support is in beta", UserWarning,
     "PyTorch's sparse CSR is used only to size unstructured-sparse artifacts (sparsity.sparse_sizes)"),
    (".*tf.function retracing.*", UserWarning,
     "the timing pass traces one tf.function per model and batch size, by design"),
    (r"\s*Warning: tf\.lite\.Interpreter is deprecated", UserWarning,
     "tf2onnx's from_tflite reads a flatbuffer with tf.lite.Interpreter; the suite runs them on ai_edge_litert"),
)
# Python loggers of the libraries, set to ERROR when quiet (retracing notices, converter INFO lines)
LIBRARY_LOGGERS = ("tensorflow", "absl", "tensorflow_model_optimization", "h5py", "tf2onnx")


def verbose() -> bool:
    return bool(os.environ.get(VERBOSE_ENV))


def configure(verbose_: bool = False) -> None:
    """Call before the framework is imported. Quiet: TensorFlow's C++ logs off (TF_CPP_MIN_LOG_LEVEL=3; real
    failures still raise Python exceptions), library loggers at ERROR, the harmless warnings above hidden."""
    if verbose_:
        os.environ[VERBOSE_ENV] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow reads it when it loads, which is after this
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for message, category, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_native():
    """Hide what native library code writes straight to stderr (TensorFlow's load-time oneDNN and CUDA-stub
    notices, printed before any log level applies; the TFLite converter's and LiteRT's INFO lines); on an
    error the hidden output is printed after all. A no-op with --verbose."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
