"""The ``full`` format: all C scaled logits per row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from softlabels.format.encodings.base import Encoding, FieldSpec, require_2d, softmax
from softlabels.format.encodings.values import check_value_dtype, decode_values, encode_values, value_fields


class FullEncoding(Encoding):
    """All C scaled logits per row, as float16, bfloat16, float32 or int8 (per-row scale/offset)."""

    name = "full"

    def __init__(self, dtype: str = "float16") -> None:
        self.dtype = check_value_dtype(dtype, self.name)

    def params(self) -> dict[str, Any]:
        return {"dtype": self.dtype}

    def fields(self, num_classes: int) -> tuple[FieldSpec, ...]:
        return value_fields("logits", num_classes, self.dtype, "class")

    def encode(self, scaled_logits: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
        return encode_values("logits", require_2d(scaled_logits), self.dtype, first_row)

    def decode(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"logits": float32 [n, C]}``."""
        return {"logits": decode_values("logits", fields, self.dtype)}

    def reconstruct(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """``softmax(logits)``."""
        return softmax(fields["logits"])

    def stored_classes(self, fields: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        return np.ones((len(fields["logits"]), num_classes), dtype=bool)
