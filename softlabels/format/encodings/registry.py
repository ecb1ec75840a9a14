"""The registry of label formats: recreate a store's encoding from its recorded name and parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from softlabels.errors import InvalidArgumentError, UnknownNameError
from softlabels.format.encodings.base import Encoding
from softlabels.format.encodings.full import FullEncoding
from softlabels.format.encodings.sampled import SampledEncoding
from softlabels.format.encodings.topk import LEGACY_LOGITS, TopKEncoding

EncodingFactory = Callable[..., Encoding]
_REGISTRY: dict[str, EncodingFactory] = {
    FullEncoding.name: FullEncoding,
    TopKEncoding.name: TopKEncoding,
    SampledEncoding.name: SampledEncoding,
}


def register_encoding(name: str, factory: EncodingFactory) -> None:
    """Make ``name`` known to :func:`encoding_from_params`."""
    _REGISTRY[name] = factory


def encoding_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def stored_encoding(name: str, params: Mapping[str, Any]) -> Encoding:
    """The encoding a store's layout records, for reading it.

    Top-k layouts written before ``encoding_params`` recorded what ``values`` hold store the raw
    kept scaled logits (:data:`~softlabels.format.encodings.topk.LEGACY_LOGITS`); their rows
    decode into the same form as today's.

    Raises:
        UnknownNameError: ``name`` is not a known format.
        InvalidArgumentError: ``params`` do not fit the format.
    """
    if name == TopKEncoding.name and "values" not in params:
        params = {**params, "values": LEGACY_LOGITS}
    return encoding_from_params(name, params)


def encoding_from_params(name: str, params: Mapping[str, Any]) -> Encoding:
    """The encoding of format ``name`` with ``params`` (what :meth:`Encoding.params` returns).

    Raises:
        UnknownNameError: ``name`` is not a known format.
        InvalidArgumentError: ``params`` do not fit the format.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UnknownNameError(f"unknown label format '{name}'; known formats: {', '.join(encoding_names())}")
    try:
        return factory(**params)
    except TypeError as exc:
        raise InvalidArgumentError(f"bad parameters {dict(params)} for format '{name}': {exc}") from exc
