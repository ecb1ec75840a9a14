"""Every default and every list of choices, in one module that imports nothing heavy.

The CLI, the pipeline schema and the library's config objects all read these names, so a
default changes in one place and ``softlabels --help`` never imports torch to show one.
"""

from __future__ import annotations

# Devices and precision
DEVICE = "auto"
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"
PRECISION = "fp32"
PRECISIONS = ("fp32", "bf16", "fp16")

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

# convert
SCHEDULERS = ("threads", "processes", "synchronous")
SCHEDULER = "threads"

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

# Student loader
BUFFER_CHUNKS = 4
MEMORY_BUDGET_MB = 256
