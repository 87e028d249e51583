import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from shared.cli import suite_main

if __name__ == "__main__":
    raise SystemExit(suite_main("tensorflow_impl"))
