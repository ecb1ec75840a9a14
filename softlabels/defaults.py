"""Every default and every list of choices, in one module that imports nothing heavy.

The CLI, the pipeline schema and the library's config objects all read these names, so a
default changes in one place and ``softlabels --help`` never imports torch to show one.
"""

from __future__ import annotations

import re

from softlabels.errors import InvalidArgumentError

# Devices and precision
DEVICE = "auto"
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"
PRECISION = "fp32"
PRECISIONS = ("fp32", "bf16", "fp16")
_CUDA_INDEX = re.compile(r"cuda:\d+")

# Label formats
LABEL_FORMAT = "full"
LABEL_FORMATS = ("full", "topk", "sampled")
VALUE_DTYPE = "float16"
VALUE_DTYPES = ("float16", "bfloat16", "float32", "int8")
SAMPLE_SEED = 0
CHUNKS_PER_SHARD = 1

# generate
GENERATE_BATCH_SIZE = 256
NUM_WORKERS = 0

# convert and merge
SCHEDULERS = ("threads", "processes", "synchronous")
SCHEDULER = "threads"
MERGE_MODES = ("probs", "logits")
MERGE_MODE = "probs"

# import: what the rows of a .npy/.npz file hold (logits are divided by T; the others are stored as they are)
IMPORT_KINDS = ("logits", "scaled-logits", "logprobs")

# compare: temperatures of the advisory (the store's own is added)
ADVISORY_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)

# Training (students and teachers)
TRAIN_BATCH_SIZE = 128
OPTIMIZERS = ("sgd", "adamw")
OPTIMIZER = "sgd"
LEARNING_RATES = {"sgd": 0.05, "adamw": 1e-3}
WEIGHT_DECAY = 5e-4
SGD_MOMENTUM = 0.9
SEED = 0
TRAIN_SPLIT = "train"
VAL_SPLIT = "test"
ALPHA = 0.9
"""Weight of the distillation term: mostly teacher, with a little hard-label cross-entropy to anchor."""

# Private labels (PATE): teachers' disjoint parts of the private split
PARTITION_SEED = 0
PATE_MECHANISMS = ("gnmax",)

# Student loader
BUFFER_CHUNKS = 4
MEMORY_BUDGET_MB = 256


def check_device(name: str) -> str:
    """Refuse a device name that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, without importing torch.

    Whether CUDA is present is decided later, by :func:`softlabels.runtime.resolve_device`.
    """
    if name not in DEVICES and _CUDA_INDEX.fullmatch(name) is None:
        raise InvalidArgumentError(f"device '{name}' is not one of {', '.join(DEVICES)} (or cuda:N)")
    return name


def check_precision(name: str) -> str:
    """Refuse a compute precision other than ``fp32``, ``bf16`` and ``fp16``, without importing torch."""
    if name not in PRECISIONS:
        raise InvalidArgumentError(f"precision '{name}' is not one of {', '.join(PRECISIONS)}")
    return name
