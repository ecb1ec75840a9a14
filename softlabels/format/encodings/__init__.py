"""Row encodings: how a batch of temperature-scaled teacher logits becomes stored arrays.

An encoding names the arrays it stores (one row per sample each) and turns a float32 block of
``logits / T`` rows into them. Encodings are pure numpy and know nothing about Zarr, so a
conversion job and the generator share them.

Three formats exist (``Encoding.name``):

``full``
    All ``C`` scaled logits per row (field ``logits``).
``topk``
    The log-probabilities of the ``K`` most probable classes per row (``values``, rounded so that
    the kept mass never exceeds 1), their classes (``indices``) and the row's
    ``log_normalizer = logsumexp`` over all ``C`` classes (kept scaled logits are
    ``values + log_normalizer``); the residual mass ``1 - sum(exp(values))`` is known.
``sampled``
    ``S`` classes drawn from ``softmax(row)``, stored as the distinct classes (``indices``) and
    how often each was drawn (``counts``); ``counts / S`` is an unbiased estimate of the teacher
    distribution.

Value types (``full`` and ``topk``): ``float16``, ``float32``, ``bfloat16`` (stored as the raw
upper 16 bits of the float32, dtype ``uint16``, rounded to nearest even, because Zarr and numpy
have no bfloat16) and ``int8`` (dtype ``uint8`` codes with a per-row float32 ``scale`` and
``offset``: ``value = offset + code * scale``).

Stores with label axes (views, token positions: ``Layout.label_axes``) hold several rows per
sample; :func:`cell_encoding` (module :mod:`.cells`) applies any of these encodings per cell, on
``[n, *label_axes, ...]`` blocks, and :func:`layout_encoding` builds it from a store's layout.

:meth:`Encoding.decode` turns stored arrays into what the losses take: float32 values and
normalisers, int64 class indices, float32 counts, under the exact keys
:func:`softlabels.training.losses.distillation_loss` reads.
"""

from softlabels.defaults import VALUE_DTYPES
from softlabels.format.encodings.base import (
    Encoding,
    FieldSpec,
    count_dtype,
    index_dtype,
    logsumexp,
    softmax,
)
from softlabels.format.encodings.cells import (
    CellEncoding,
    cell_encoding,
    cell_targets,
    flatten_cells,
    layout_encoding,
    row_encoding,
)
from softlabels.format.encodings.full import FullEncoding
from softlabels.format.encodings.registry import (
    encoding_from_params,
    encoding_names,
    register_encoding,
    stored_encoding,
)
from softlabels.format.encodings.sampled import SampledEncoding
from softlabels.format.encodings.topk import TopKEncoding, top_classes, topk_target
from softlabels.format.encodings.values import (
    bfloat16_bits_to_float32,
    dequantize_uint8,
    float32_to_bfloat16_bits,
    quantize_uint8,
)

__all__ = [
    "VALUE_DTYPES",
    "CellEncoding",
    "Encoding",
    "FieldSpec",
    "FullEncoding",
    "SampledEncoding",
    "TopKEncoding",
    "bfloat16_bits_to_float32",
    "cell_encoding",
    "cell_targets",
    "count_dtype",
    "dequantize_uint8",
    "encoding_from_params",
    "encoding_names",
    "flatten_cells",
    "float32_to_bfloat16_bits",
    "index_dtype",
    "layout_encoding",
    "logsumexp",
    "quantize_uint8",
    "register_encoding",
    "row_encoding",
    "softmax",
    "stored_encoding",
    "top_classes",
    "topk_target",
]
