"""The registry of label formats: recreate a store's encoding from its recorded name and parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from softlabels.errors import InvalidArgumentError, UnknownNameError
from softlabels.format.encodings.base import Encoding
from softlabels.format.encodings.full import FullEncoding
from softlabels.format.encodings.sampled import SampledEncoding
from softlabels.format.encodings.topk import TopKEncoding

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


def encoding_from_params(name: str, params: Mapping[str, Any]) -> Encoding:
    """Recreate the encoding a store records.

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


def format_options(
    label_format: str, *, k: int | None, samples: int | None, seed: int, option: str = "--format"
) -> dict[str, Any]:
    """Map the command line's ``--k``/``--samples``/``--seed`` onto the parameters of ``label_format``.

    Args:
        label_format: the chosen format.
        k: ``--k`` as given (None when absent).
        samples: ``--samples`` as given (None when absent).
        seed: ``--seed``.
        option: the name of the switch that chose the format, for messages (``--format``, ``--to``).

    Raises:
        InvalidArgumentError: a switch that does not apply to the format, or a missing one it needs.
    """
    if label_format != "topk" and k is not None:
        raise InvalidArgumentError(f"--k applies only to {option} topk")
    if label_format != "sampled" and samples is not None:
        raise InvalidArgumentError(f"--samples applies only to {option} sampled")
    if label_format == "topk":
        if k is None:
            raise InvalidArgumentError(f"{option} topk needs --k")
        return {"k": k}
    if label_format == "sampled":
        if samples is None:
            raise InvalidArgumentError(f"{option} sampled needs --samples")
        return {"samples": samples, "seed": seed}
    return {}


def build_encoding(label_format: str, *, dtype: str = "float16", **options: Any) -> Encoding:
    """The encoding that ``generate --format`` (or ``convert --to``) asks for, with its options."""
    return encoding_from_params(label_format, {"dtype": dtype, **options})
