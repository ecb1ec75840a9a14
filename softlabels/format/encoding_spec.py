"""The one value that says how label rows are encoded: format, value dtype, k, samples and seed.

Configs, the CLI, pipelines and the store's layout all carry an :class:`EncodingSpec`; nothing
else passes the format around as loose fields. It validates itself on construction (pure Python,
no numpy, so a command line is checked before anything heavy is imported) and builds the
:class:`~softlabels.format.encodings.Encoding` that does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from softlabels import defaults
from softlabels.errors import InvalidArgumentError, InvalidSettingError, UnknownNameError

if TYPE_CHECKING:
    from softlabels.format.encodings import Encoding

SEED_LIMIT = 1 << 64
TOPK_VALUES = "logprobs"
"""What top-k ``values`` hold (``encoding_params["values"]``): the kept classes' log-probabilities."""


@dataclass(frozen=True)
class EncodingSpec:
    """How rows are stored.

    Attributes:
        format: ``full``, ``topk`` or ``sampled``.
        dtype: Value type of ``full`` and ``topk`` (``float16``, ``bfloat16``, ``float32``, ``int8``);
            None for ``sampled``, which stores class indices and counts only.
        k: Classes kept per row (``topk`` only).
        samples: Draws per row (``sampled`` only).
        seed: Seed of the draws (``sampled`` only; None otherwise).

    Raises:
        UnknownNameError: an unknown format.
        InvalidSettingError: a parameter the format does not take, a missing one, or a bad value
            (its ``setting`` names which).
    """

    format: str = defaults.LABEL_FORMAT
    dtype: str | None = defaults.VALUE_DTYPE
    k: int | None = None
    samples: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.format not in defaults.LABEL_FORMATS:
            raise UnknownNameError(
                f"unknown label format '{self.format}'; known formats: {', '.join(defaults.LABEL_FORMATS)}"
            )
        self._check_applies("k", self.format == "topk")
        self._check_applies("samples", self.format == "sampled")
        self._check_applies("seed", self.format == "sampled")
        if self.format == "sampled":
            if self.dtype is not None:
                raise InvalidSettingError(
                    "dtype",
                    f"a value dtype ({self.dtype}) does not apply to format sampled, which stores class "
                    "indices and counts only",
                )
            self._check_int("samples", minimum=1)
            self._check_int("seed", minimum=0)
            if self.seed is not None and self.seed >= SEED_LIMIT:
                raise InvalidSettingError("seed", f"seed must be in [0, 2**64), got {self.seed}")
            return
        if self.dtype not in defaults.VALUE_DTYPES:
            raise InvalidSettingError(
                "dtype",
                f"value dtype '{self.dtype}' is not one of {', '.join(defaults.VALUE_DTYPES)} "
                f"(format {self.format})",
            )
        if self.format == "topk":
            self._check_int("k", minimum=1)

    @classmethod
    def create(
        cls,
        format: str = defaults.LABEL_FORMAT,
        *,
        dtype: str | None = None,
        k: int | None = None,
        samples: int | None = None,
        seed: int | None = None,
    ) -> EncodingSpec:
        """The spec a user's choices ask for, filling in what the format implies.

        ``dtype`` defaults to float16 for ``full``/``topk`` and is dropped for ``sampled`` when left at
        that default; ``seed`` defaults to 0 for ``sampled`` and is dropped for other formats when 0.
        """
        draw_seed: int | None
        if format == "sampled":
            value_dtype = None if dtype in (None, defaults.VALUE_DTYPE) else dtype
            draw_seed = defaults.SAMPLE_SEED if seed is None else seed
        else:
            value_dtype = defaults.VALUE_DTYPE if dtype is None else dtype
            draw_seed = None if seed in (None, defaults.SAMPLE_SEED) else seed
        return cls(format, value_dtype, k, samples, draw_seed)

    @classmethod
    def from_layout(cls, encoding: str, params: dict[str, Any]) -> EncodingSpec:
        """The spec a store's layout records (``encoding`` and ``encoding_params``)."""
        # "values" says what top-k values hold; a layout without it is an older top-k store, which
        # readers decode through softlabels.format.encodings.stored_encoding.
        unknown = set(params) - {"dtype", "k", "samples", "seed", "values"}
        if unknown:
            raise InvalidArgumentError(f"format '{encoding}' has unknown parameters {sorted(unknown)}")
        return cls(encoding, params.get("dtype"), params.get("k"), params.get("samples"), params.get("seed"))

    def params(self) -> dict[str, Any]:
        """The parameters a store's layout records (the format's own, without None values)."""
        values = {"dtype": self.dtype, "k": self.k, "samples": self.samples, "seed": self.seed}
        params = {name: value for name, value in values.items() if value is not None}
        if self.format == "topk":
            params["values"] = TOPK_VALUES
        return params

    def build(self) -> Encoding:
        """The encoding that stores rows this way."""
        from softlabels.format.encodings import encoding_from_params

        return encoding_from_params(self.format, self.params())

    def describe(self) -> str:
        """``topk k=5 float16``, ``sampled S=16 seed 0``, ``full int8``."""
        if self.format == "sampled":
            return f"sampled S={self.samples} seed {self.seed}"
        if self.format == "topk":
            return f"topk k={self.k} {self.dtype}"
        return f"full {self.dtype}"

    def _check_applies(self, name: str, applies: bool) -> None:
        if not applies and getattr(self, name) is not None:
            raise InvalidSettingError(name, f"{name} does not apply to format {self.format}")

    def _check_int(self, name: str, *, minimum: int) -> None:
        value = getattr(self, name)
        if value is None:
            raise InvalidSettingError(name, f"format {self.format} needs {name} ({_MEANING[name]})")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSettingError(name, f"{name} must be an integer, got {value!r}")
        if value < minimum:
            raise InvalidSettingError(name, f"{name} must be >= {minimum}, got {value}")


_MEANING = {"k": "classes kept per row", "samples": "draws per row", "seed": "seed of the draws"}
