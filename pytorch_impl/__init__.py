"""PyTorch suite of the compression study."""
