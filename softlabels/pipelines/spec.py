"""Pipeline files: frozen dataclasses for what a pipeline declares, and the validating parser.

A pipeline is a TOML file (see ``pipelines/digits.toml``) read with :mod:`tomllib`. Every
section is checked against a declared schema before anything runs, so an unknown key, a missing
field or a wrong type is one :class:`~softlabels.errors.PipelineError` whose message names the
file, the dotted key and what was expected::

    pipelines/x.toml: students.kd.epochs: expected an integer >= 1, got "three"

Overrides (``key.path=value``, the CLI's ``--set``) are applied to the parsed document before validation; the
value is read as a TOML value when it is one (``3``, ``0.5``, ``false``, ``"text"``) and as a
plain string otherwise (``/data/cifar10``).

Relative paths in a pipeline (``pipeline.output``, ``dataset.root``, ``dataset.archive``,
``teacher.weights``, ``generate.store``) are relative to the current directory, like paths given
on the command line; a leading ``~`` and environment variables (``$SOFTLABELS_DATASETS``) are
expanded.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from softlabels import defaults
from softlabels.errors import InvalidArgumentError, InvalidSettingError, PipelineError
from softlabels.format.views import ViewRecipe

__all__ = [
    "DEFAULT_PIPELINE",
    "DatasetSpec",
    "GenerateSpec",
    "Override",
    "PipelineSpec",
    "RunSpec",
    "StudentSpec",
    "TeacherSpec",
    "load_pipeline",
    "parse_override",
    "parse_pipeline",
]

DEFAULT_PIPELINE = "digits.toml"
"""The embedded pipeline that ``softlabels run`` runs without a file (package data of this module)."""

# Dataset specs whose folder is given as dataset.root (``spec = "text"`` is ``text:<root>``).
_ROOTED_SPECS = ("imagefolder", "text")

# Names become folder names (``<output>/students/<name>``) and dotted keys, so no dots or slashes.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NAME_DESCRIPTION = "letters, digits, '_' and '-' (starting with a letter or digit)"


@dataclass(frozen=True)
class DatasetSpec:
    """``[dataset]``: what the teacher and the students learn from.

    Attributes:
        spec: ``digits``, ``imagefolder`` (with ``root``), ``imagefolder:ROOT``,
            ``torchvision:NAME`` (with ``root``), ``text`` (with ``root``), ``text:ROOT`` or a
            plug-in ``module:callable``/``file.py:callable``.
        root: The image folder, the text folder (``<split>.txt`` files), or the data root of a
            ``torchvision:`` dataset.
        archive: A ``.tar.gz`` with top-level ``train/`` and ``test/`` folders, unpacked into
            ``root`` on first use (``imagefolder`` only).
        train_split: The split the teacher and the students train on (and the store covers).
        val_split: The held-out split every accuracy (and perplexity) is measured on.
        seq_len: Tokens per sample of a text dataset (required there, refused elsewhere).
    """

    spec: str
    root: str | None
    archive: str | None
    train_split: str
    val_split: str
    seq_len: int | None = None

    @property
    def source_spec(self) -> str:
        """The dataset spec that :func:`softlabels.sources.load_dataset` takes."""
        if self.spec in _ROOTED_SPECS:
            return f"{self.spec}:{self.root}"
        return self.spec

    @property
    def data_root(self) -> str | None:
        """The ``data_root`` argument of the loaders (only ``torchvision:`` datasets use one)."""
        return self.root if self.spec.startswith("torchvision:") else None


@dataclass(frozen=True)
class TeacherSpec:
    """``[teacher]``: a model with trained ``weights``, or the settings to train it (``epochs`` ...).

    The training settings are used only when ``weights`` is absent, so an override ``teacher.weights=...``
    works on a pipeline that trains its teacher.
    """

    model: str
    weights: str | None
    epochs: int | None
    batch_size: int
    optimizer: str
    lr: float | None
    weight_decay: float
    augment: bool
    seed: int


@dataclass(frozen=True)
class GenerateSpec:
    """``[generate]``: how the teacher's soft labels are stored.

    Attributes:
        dtype: Stored value type; None for ``sampled``, which stores class indices and counts.
        store: Where the label store goes (default ``<output>/labels.zarr``).
        views: Augmented views stored per sample (issue 13), or None for one unaugmented row;
            the views are drawn under ``run.seed``, and distilled students replay them.
        augment: The views' recipe (``crop=LO:HI,flip``; default ``crop=0.35:1,flip``); needs ``views``.
    """

    temperature: float
    dtype: str | None
    batch_size: int
    label_format: str
    k: int | None
    samples: int | None
    store: str
    views: int | None = None
    augment: str | None = None


@dataclass(frozen=True)
class StudentSpec:
    """``[students.<name>]``: one student; ``kd = false`` makes it a hard-label baseline.

    ``alpha`` and ``temperature`` apply to distilled students only; None takes the trainer's
    defaults (alpha 0.9, the store's temperature).
    """

    name: str
    model: str
    epochs: int
    kd: bool
    alpha: float | None
    temperature: float | None
    batch_size: int
    optimizer: str
    lr: float | None
    weight_decay: float
    augment: bool
    seed: int


@dataclass(frozen=True)
class RunSpec:
    """``[run]``: where and how every stage computes."""

    device: str
    num_workers: int
    seed: int
    precision: str


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline.

    Attributes:
        name: ``pipeline.name`` (default: the file's stem).
        source: Where the pipeline came from, as messages name it.
        output: The output folder (default ``data/<name>``); stage outputs go under it.
        students: In file order.
    """

    name: str
    source: str
    output: str
    dataset: DatasetSpec
    teacher: TeacherSpec
    generate: GenerateSpec
    students: tuple[StudentSpec, ...]
    run: RunSpec

    def to_json(self) -> dict[str, Any]:
        """The resolved pipeline (defaults filled in), as recorded in ``report.json``."""
        return asdict(self)


@dataclass(frozen=True)
class Override:
    """One ``key.path=value`` override, already split; ``origin`` names it in messages (the CLI: ``--set``)."""

    key: str
    value: Any
    origin: str = "override"


class _Expected(Exception):
    """A value failed its check; the parser adds the file and the key."""


_MISSING: Any = object()


@dataclass(frozen=True)
class _Field:
    """One key of a section: how its value is checked and converted, and its default."""

    key: str
    check: Callable[[Any], Any]
    default: Any = _MISSING


def load_pipeline(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str | Override] = (),
    output: str | None = None,
) -> PipelineSpec:
    """Read and validate a pipeline file, or the embedded default digits pipeline when ``path`` is None.

    Args:
        path: The TOML file.
        overrides: ``key.path=value`` strings (``--set``) or ready :class:`Override` objects,
            applied in order.
        output: ``--out``: the output folder, overriding ``pipeline.output``.

    Raises:
        PipelineError: The file is missing, is not TOML, or is not a valid pipeline.
    """
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_PIPELINE).read_text(encoding="utf-8")
        source, stem = f"built-in {DEFAULT_PIPELINE}", Path(DEFAULT_PIPELINE).stem
    else:
        source, stem = str(path), Path(path).stem
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PipelineError(f"{source}: no such pipeline file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PipelineError(f"{source}: cannot read it ({exc})") from exc
    parsed = [item if isinstance(item, Override) else parse_override(item) for item in overrides]
    if output is not None:
        parsed.append(Override("pipeline.output", output, origin="output"))
    return parse_pipeline(text, source=source, default_name=stem, overrides=parsed)


def parse_override(text: str, *, origin: str = "override") -> Override:
    """Split ``key.path=value``; the value is a TOML value when it parses as one, else a string.

    ``origin`` names the override in messages (the CLI passes ``--set``).

    Raises:
        PipelineError: No ``=``, or an empty key part.
    """
    key, separator, raw = text.partition("=")
    key = key.strip()
    if not separator or not key or any(not part.strip() for part in key.split(".")):
        raise PipelineError(
            f"{origin} {text}: expected KEY=VALUE with a dotted key, e.g. students.kd.epochs=3"
        )
    return Override(".".join(part.strip() for part in key.split(".")), _toml_value(raw.strip()), origin)


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        # Paths and bare words are not TOML values; taking them as strings saves quoting in shells.
        return raw


def parse_pipeline(
    text: str, *, source: str, default_name: str, overrides: Sequence[Override] = ()
) -> PipelineSpec:
    """Validate a pipeline document (TOML text) with its overrides applied.

    Args:
        text: The TOML text.
        source: How messages name the file.
        default_name: ``pipeline.name`` when the file sets none.
        overrides: Applied in order before validation.

    Raises:
        PipelineError: Naming the file, the dotted key and what was expected.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{source}: not valid TOML: {exc}") from exc
    origins: dict[str, str] = {}
    for override in overrides:
        _apply_override(document, override, source)
        origins[override.key] = override.origin
    return _Parser(source, origins).pipeline(document, default_name)


def _apply_override(document: dict[str, Any], override: Override, source: str) -> None:
    *parents, last = override.key.split(".")
    table = document
    for depth, part in enumerate(parents):
        child = table.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise PipelineError(f"{source}: {override.origin} {override.key}: {where} is not a table")
        table = child
    table[last] = override.value


class _Parser:
    """Reads the sections of one document, naming ``source`` and override origins in its errors."""

    def __init__(self, source: str, origins: Mapping[str, str]) -> None:
        self.source = source
        self.origins = origins

    def error(self, key: str, message: str) -> PipelineError:
        origin = self.origins.get(key)
        where = f"{origin} {key}" if origin else key
        return PipelineError(f"{self.source}: {where}: {message}")

    def pipeline(self, document: dict[str, Any], default_name: str) -> PipelineSpec:
        self.check_keys("", document, ("pipeline", "dataset", "teacher", "generate", "students", "run"))
        head = self.section(
            document,
            "pipeline",
            (_Field("name", _name, default_name), _Field("output", _path, None)),
            required=False,
        )
        output = head["output"] or f"data/{head['name']}"
        run = RunSpec(**self.section(document, "run", _RUN_FIELDS, required=False))
        dataset = self.dataset(document)
        teacher = self.teacher(document, run.seed)
        generate = self.generate(document, output)
        students = self.students(document, run.seed, generate)
        return PipelineSpec(head["name"], self.source, output, dataset, teacher, generate, students, run)

    def dataset(self, document: dict[str, Any]) -> DatasetSpec:
        values = self.section(document, "dataset", _DATASET_FIELDS)
        spec = DatasetSpec(**values)
        kind, separator, argument = spec.spec.partition(":")
        needs_root = spec.spec in _ROOTED_SPECS or kind == "torchvision"
        if needs_root and spec.root is None:
            raise self.error(
                "dataset.root", f"missing; dataset {_shown(spec.spec)} needs the folder of its files"
            )
        if not needs_root and spec.root is not None:
            raise self.error("dataset.root", f"does not apply to dataset {_shown(spec.spec)}; remove it")
        if spec.archive is not None and spec.spec != "imagefolder":
            raise self.error(
                "dataset.archive", 'applies only to spec = "imagefolder" (it is unpacked into root)'
            )
        if separator and kind in ("imagefolder", "torchvision", "text") and not argument:
            raise self.error("dataset.spec", f"expected text after ':', got {_shown(spec.spec)}")
        is_text = kind == "text"
        if is_text and spec.seq_len is None:
            raise self.error(
                "dataset.seq_len", "missing; a text dataset is cut into windows of seq_len tokens"
            )
        if not is_text and spec.seq_len is not None:
            raise self.error("dataset.seq_len", f"applies only to text datasets, not {_shown(spec.spec)}")
        if spec.train_split == spec.val_split:
            raise self.error(
                "dataset.val_split",
                f"expected a held-out split other than train_split {_shown(spec.train_split)}",
            )
        return spec

    def teacher(self, document: dict[str, Any], seed: int) -> TeacherSpec:
        values = self.section(document, "teacher", _TEACHER_FIELDS)
        if values["weights"] is None and values["epochs"] is None:
            raise self.error(
                "teacher.epochs",
                "missing; expected an integer >= 1 (or teacher.weights with trained weights)",
            )
        return TeacherSpec(**{**values, "seed": _or(values["seed"], seed)})

    def generate(self, document: dict[str, Any], output: str) -> GenerateSpec:
        values = self.section(document, "generate", _GENERATE_FIELDS)
        label_format = values.pop("format")
        needed = {"topk": "k", "sampled": "samples"}.get(label_format)
        for key in ("k", "samples"):
            if key == needed and values[key] is None:
                raise self.error(f"generate.{key}", f'missing; format = "{label_format}" needs it')
            if key != needed and values[key] is not None:
                raise self.error(f"generate.{key}", f'does not apply to format = "{label_format}"; remove it')
        if label_format == "sampled" and values["dtype"] is not None:
            raise self.error(
                "generate.dtype", 'does not apply to format = "sampled" (it stores class counts)'
            )
        if label_format != "sampled":
            values["dtype"] = _or(values["dtype"], defaults.VALUE_DTYPE)
        store = _or(values.pop("store"), str(Path(output) / "labels.zarr"))
        self.check_views(values["views"], values["augment"])
        return GenerateSpec(label_format=label_format, store=store, **values)

    def check_views(self, views: int | None, augment: str | None) -> None:
        if augment is None:
            return
        if views is None:
            raise self.error(
                "generate.augment", "needs generate.views (the number of augmented views per sample)"
            )
        try:
            ViewRecipe.parse(augment)
        except InvalidSettingError as exc:
            raise self.error("generate.augment", str(exc)) from None

    def students(
        self, document: dict[str, Any], seed: int, generate: GenerateSpec
    ) -> tuple[StudentSpec, ...]:
        table = document.get("students")
        if table is None:
            raise self.error("students", "missing; expected [students.<name>] tables")
        if not isinstance(table, dict):
            raise self.error("students", f"expected [students.<name>] tables, got {_shown(table)}")
        students = tuple(self.student(name, table, seed, generate) for name in table)
        if not any(student.kd for student in students) or all(student.kd for student in students):
            found = ", ".join(f"{s.name} (kd = {str(s.kd).lower()})" for s in students) or "none"
            raise self.error(
                "students",
                "expected at least one distilled student (kd = true) and one hard-label baseline "
                f"(kd = false) to compare it with; found {found}",
            )
        return students

    def student(self, name: str, table: dict[str, Any], seed: int, generate: GenerateSpec) -> StudentSpec:
        key = f"students.{name}"
        if _NAME_PATTERN.fullmatch(name) is None:
            raise self.error(key, f"expected a student name made of {_NAME_DESCRIPTION}, got {_shown(name)}")
        values = self.section(table, name, _STUDENT_FIELDS, prefix="students.")
        if not values["kd"]:
            for option in ("alpha", "temperature"):
                if values[option] is not None:
                    raise self.error(
                        f"{key}.{option}", "does not apply to a hard-label baseline (kd = false)"
                    )
        if generate.views is not None and values["kd"] and values["augment"]:
            raise self.error(
                f"{key}.augment",
                "must be false for a distilled student of a store of views: it replays the stored views",
            )
        temperature = values["temperature"]
        if generate.label_format != "full" and temperature not in (None, generate.temperature):
            raise self.error(
                f"{key}.temperature",
                f"expected generate.temperature ({generate.temperature:g}) or nothing: only full stores "
                f'can be re-tempered, not format = "{generate.label_format}"',
            )
        return StudentSpec(name=name, **{**values, "seed": _or(values["seed"], seed)})

    def section(
        self,
        document: dict[str, Any],
        name: str,
        fields: Sequence[_Field],
        *,
        required: bool = True,
        prefix: str = "",
    ) -> dict[str, Any]:
        """The checked values of table ``document[name]``, defaults filled in."""
        path = f"{prefix}{name}"
        table = document.get(name)
        if table is None and not required:
            table = {}
        if table is None:
            raise self.error(path, f"missing; expected a [{path}] table")
        if not isinstance(table, dict):
            raise self.error(path, f"expected a [{path}] table, got {_shown(table)}")
        self.check_keys(path, table, tuple(item.key for item in fields))
        values = {}
        for item in fields:
            key = f"{path}.{item.key}"
            if item.key not in table:
                if item.default is _MISSING:
                    raise self.error(key, f"missing; expected {_describe(item.check)}")
                values[item.key] = item.default
                continue
            try:
                values[item.key] = item.check(table[item.key])
            except _Expected as exc:
                raise self.error(key, f"expected {exc}, got {_shown(table[item.key])}") from None
        return values

    def check_keys(self, path: str, table: dict[str, Any], allowed: Sequence[str]) -> None:
        for key in table:
            if key not in allowed:
                dotted = f"{path}.{key}" if path else key
                where = f"[{path}]" if path else "a pipeline file"
                raise self.error(dotted, f"unknown key; allowed keys in {where}: {', '.join(allowed)}")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _shown(value: Any) -> str:
    """A value as TOML spells it, for messages (``"three"``, ``true``, ``3``)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (str, bool, int, float)):
        return json.dumps(value)
    return f"{type(value).__name__} {value}"


def _describe(check: Callable[[Any], Any]) -> str:
    description: str = getattr(check, "expected", "a value")
    return description


def _expects(description: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Attach what a check expects, so a missing key's message can say it too."""

    def attach(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
        check.expected = description  # type: ignore[attr-defined]
        return check

    return attach


def _integer(minimum: int) -> Callable[[Any], int]:
    @_expects(f"an integer >= {minimum}")
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Expected(f"an integer >= {minimum}")
        return value

    return check


def _number(*, low: float, high: float = math.inf, low_open: bool = False) -> Callable[[Any], float]:
    bound = f"> {low:g}" if low_open else f">= {low:g}"
    description = f"a number in [{low:g}, {high:g}]" if math.isfinite(high) else f"a number {bound}"

    @_expects(description)
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Expected(description)
        if value < low or (low_open and value == low) or value > high:
            raise _Expected(description)
        return float(value)

    return check


def _choice(*choices: str) -> Callable[[Any], str]:
    description = "one of " + ", ".join(json.dumps(choice) for choice in choices)

    @_expects(description)
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Expected(description)
        return value

    return check


@_expects("a non-empty string")
def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Expected("a non-empty string")
    return value


@_expects(f"a name made of {_NAME_DESCRIPTION}")
def _name(value: Any) -> str:
    if not isinstance(value, str) or _NAME_PATTERN.fullmatch(value) is None:
        raise _Expected(f"a name made of {_NAME_DESCRIPTION}")
    return value


@_expects("a path (a non-empty string)")
def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Expected("a path (a non-empty string)")
    # An unset variable stays as written; the input checks name it when the path is needed.
    return str(Path(os.path.expandvars(value)).expanduser())


@_expects("a store location (a path, or an s3:// or http(s):// URL)")
def _store_location(value: Any) -> str:
    if isinstance(value, str) and "://" in value:
        return value.strip()  # a URL: no home folder to expand, and Path would fold its "//"
    return _path(value)  # type: ignore[no-any-return]


@_expects("true or false")
def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Expected("true or false")
    return value


_DEVICE_DESCRIPTION = ", ".join(json.dumps(name) for name in defaults.DEVICES) + ' or "cuda:N"'


@_expects(_DEVICE_DESCRIPTION)
def _device(value: Any) -> str:
    if not isinstance(value, str):
        raise _Expected(_DEVICE_DESCRIPTION)
    try:
        return defaults.check_device(value)
    except InvalidArgumentError:
        raise _Expected(_DEVICE_DESCRIPTION) from None


_POSITIVE = _number(low=0, low_open=True)
_NON_NEGATIVE = _number(low=0)

_RUN_FIELDS = (
    _Field("device", _device, defaults.DEVICE),
    _Field("num_workers", _integer(0), defaults.NUM_WORKERS),
    _Field("seed", _integer(0), defaults.SEED),
    _Field("precision", _choice(*defaults.PRECISIONS), defaults.PRECISION),
)
_DATASET_FIELDS = (
    _Field("spec", _text),
    _Field("root", _path, None),
    _Field("archive", _path, None),
    _Field("train_split", _text, defaults.TRAIN_SPLIT),
    _Field("val_split", _text, defaults.VAL_SPLIT),
    _Field("seq_len", _integer(1), None),
)
# Training settings shared by the teacher and the students; None defers to the trainer's defaults.
_TRAINING_FIELDS = (
    _Field("batch_size", _integer(1), defaults.TRAIN_BATCH_SIZE),
    _Field("optimizer", _choice(*defaults.OPTIMIZERS), defaults.OPTIMIZER),
    _Field("lr", _POSITIVE, None),
    _Field("weight_decay", _NON_NEGATIVE, defaults.WEIGHT_DECAY),
    _Field("augment", _boolean, False),
    _Field("seed", _integer(0), None),
)
TRAINING_OPTIONS = tuple(item.key for item in _TRAINING_FIELDS)
"""The training settings teacher and student sections share (named as the trainer's configs name them)."""
_TEACHER_FIELDS = (
    _Field("model", _text),
    _Field("weights", _path, None),
    _Field("epochs", _integer(1), None),
    *_TRAINING_FIELDS,
)
_GENERATE_FIELDS = (
    _Field("temperature", _POSITIVE),
    _Field("dtype", _choice(*defaults.VALUE_DTYPES), None),
    _Field("batch_size", _integer(1), defaults.GENERATE_BATCH_SIZE),
    _Field("format", _choice(*defaults.LABEL_FORMATS), defaults.LABEL_FORMAT),
    _Field("k", _integer(1), None),
    _Field("samples", _integer(1), None),
    _Field("store", _store_location, None),
    _Field("views", _integer(1), None),
    _Field("augment", _text, None),
)
_STUDENT_FIELDS = (
    _Field("model", _text),
    _Field("epochs", _integer(1)),
    _Field("kd", _boolean, True),
    _Field("alpha", _number(low=0, high=1), None),
    _Field("temperature", _POSITIVE, None),
    *_TRAINING_FIELDS,
)
