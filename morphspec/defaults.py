"""Defaults shared by the library and the CLI, kept torch-free so `morph --help` stays fast."""

DEFAULT_RTOL = 1e-5  # rel_err = max|s - t| / max|t| that counts as function-preserving (fp32)
DEFAULT_SAMPLES = 32
MAX_TRAIN_STEPS = 10_000  # drift steps: a check takes a few; more is a typo that costs hours
MAX_LR = 100.0  # drift learning rate: above it every model diverges
