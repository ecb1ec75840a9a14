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
WRITE_THREADS = 4
"""Shards that ``generate`` encodes, compresses and writes at once (zstd and numpy release the GIL)."""
WRITE_BUFFER_MB = 256
"""Rows (as float32) that the shards being written may hold together; one shard is always allowed."""
VIEW_RECIPE = "crop=0.35:1,flip"
"""The augmentation of ``generate --views V`` without ``--augment``: random-resized crop and flip."""
VIEW_SEED = 0
"""Seed of the stream that draws each view's augmentation, keyed by (seed, sample, view)."""

# convert and merge
SCHEDULERS = ("threads", "processes", "synchronous")
"""dask's schedulers inside this process; ``local:N`` and a cluster address are accepted too."""
SCHEDULER = "threads"

# dask.distributed clusters (generate, convert, merge)
IN_PROCESS = "in-process"
GENERATE_SCHEDULER = IN_PROCESS
"""``generate`` runs the teacher in this process unless given ``local:N`` or a cluster address."""
LOCAL_CLUSTER = "local:"
"""``local:N`` starts a LocalCluster of N single-threaded worker processes on this machine."""
CLUSTER_SCHEMES = ("tcp://", "tls://")
"""A scheduler address (``tcp://HOST:PORT``) joins an existing dask.distributed cluster."""
_LOCAL_CLUSTER_SPEC = re.compile(r"local:(\d+)")
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


def is_cluster(scheduler: str) -> bool:
    """Whether ``scheduler`` names a dask.distributed cluster (``local:N`` or a scheduler address)."""
    return scheduler.startswith(LOCAL_CLUSTER) or scheduler.startswith(CLUSTER_SCHEMES)


def local_cluster_workers(scheduler: str) -> int | None:
    """N of ``local:N``; None for any other scheduler."""
    match = _LOCAL_CLUSTER_SPEC.fullmatch(scheduler)
    return int(match.group(1)) if match else None


def check_scheduler(name: str, in_process: tuple[str, ...]) -> str:
    """Refuse a scheduler that is neither one of ``in_process`` nor ``local:N`` (N >= 1) nor a cluster address."""
    if name in in_process or name.startswith(CLUSTER_SCHEMES):
        return name
    if name.startswith(LOCAL_CLUSTER):
        workers = local_cluster_workers(name)
        if workers is None or workers < 1:
            raise InvalidArgumentError(f"scheduler '{name}' must be local:N with N >= 1 worker processes")
        return name
    raise InvalidArgumentError(
        f"scheduler '{name}' is not one of {', '.join(in_process)}, local:N or tcp://HOST:PORT"
    )
