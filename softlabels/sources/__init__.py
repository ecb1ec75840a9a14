"""Where data and models come from: dataset specs, fingerprints, model specs, weights, checkpoints.

Dataset specs (:func:`load_dataset`): ``digits``, ``imagefolder:ROOT``, ``torchvision:NAME``,
``text:ROOT`` (with a sequence length), ``package.module:callable`` and ``path/to/file.py:callable``.
Samples are ``(input, target)``: any float or int64 (token ids) tensor, and an int label or int64
labels per position (``-100`` ignored); :func:`pad_collate` batches sequences of varying length.
Model specs (:func:`load_model`, :func:`build_model`): the built-ins in :data:`BUILTIN_MODELS`,
torchvision classification names (``resnet18``) and the same two plug-in forms.
"""

from softlabels.sources.checkpoints import parameters_sha256, read_weights, save_checkpoint
from softlabels.sources.collate import IGNORE_INDEX, PadCollate, pad_collate
from softlabels.sources.datasets import DatasetSource, ensure_cifar10, load_dataset
from softlabels.sources.models import (
    BUILTIN_MODELS,
    ModelInputs,
    ModelSource,
    build_model,
    count_parameters,
    load_model,
)
from softlabels.sources.plugins import load_callable

__all__ = [
    "BUILTIN_MODELS",
    "DatasetSource",
    "IGNORE_INDEX",
    "ModelInputs",
    "ModelSource",
    "PadCollate",
    "build_model",
    "count_parameters",
    "ensure_cifar10",
    "load_callable",
    "load_dataset",
    "load_model",
    "pad_collate",
    "parameters_sha256",
    "read_weights",
    "save_checkpoint",
]
