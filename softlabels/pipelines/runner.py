"""``run_pipeline``: teacher -> label store -> students -> report, reusing every finished stage.

Every stage delegates to the library function that owns it, and each of those resumes itself:
``train_teacher``/``train_student`` continue after their last complete epoch (and train nothing
when every epoch is done), ``generate`` writes only missing shards (and nothing when the store is
complete). A stage whose outputs were made with other settings is an error that names the stage;
``overwrite`` starts every stage over instead. Stage outputs live under the pipeline's output
folder::

    <output>/teacher/             train_teacher's run folder (or evaluation.json for given weights)
    <output>/labels.zarr          the store (unless generate.store puts it elsewhere)
    <output>/students/<name>/     train_student's run folder, one per student
    <output>/report.json, report.png
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from softlabels.errors import (
    Interrupted,
    InvalidArgumentError,
    PipelineError,
    SoftLabelsError,
    StoreMismatchError,
)
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.pipelines.data import check_inputs
from softlabels.pipelines.report import (
    PipelineReport,
    StageResult,
    StoreResult,
    StudentResult,
    TeacherResult,
    epochs,
    write_report,
)
from softlabels.pipelines.spec import TRAINING_OPTIONS, PipelineSpec, StudentSpec, TeacherSpec
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.runtime import resolve_device
from softlabels.sources import BUILTIN_MODELS, DatasetSource, ensure_cifar10, load_dataset
from softlabels.sources.models import is_model_name
from softlabels.sources.plugins import is_plugin_ref
from softlabels.training.config import TeacherConfig, TrainConfig, TrainSummary
from softlabels.training.run_dir import RUN_FILES, write_json
from softlabels.training.train import evaluate, load_job_model, perplexity, train_student, train_teacher

__all__ = ["TEACHER_EVALUATION", "run_pipeline"]

TEACHER_EVALUATION = "evaluation.json"
"""The cached accuracy of given teacher weights, in ``<output>/teacher``."""


@dataclass(frozen=True)
class _Plan:
    """Every stage's configuration, built (and so validated) before any stage runs.

    Attributes:
        teacher: How to train the teacher; None when ``teacher.weights`` gives trained weights.
        teacher_weights: The weights the labels are generated with.
    """

    spec: PipelineSpec
    teacher: TeacherConfig | None
    teacher_weights: str
    generate: GenerateConfig
    students: tuple[tuple[StudentSpec, TrainConfig], ...]


def run_pipeline(
    spec: PipelineSpec, *, progress: bool = True, overwrite: bool = False, command: str | None = None
) -> PipelineReport:
    """Run every stage of ``spec`` that is not finished yet, then write ``report.json`` and ``report.png``.

    Args:
        spec: A validated pipeline (see :func:`softlabels.pipelines.load_pipeline`).
        progress: Print stage and epoch lines (and progress bars on a terminal) to stderr.
        overwrite: Start every stage over, replacing the outputs of earlier runs (the store too).
        command: The command line recorded in the store's provenance.

    Returns:
        What each stage produced; ``format_table`` turns it into the results table.

    Raises:
        PipelineError: A model name, a path or a setting is unusable; nothing has run yet.
        SoftLabelsError: A stage failed; the message starts with the stage's name.
    """
    started = time.perf_counter()
    plan = _plan(spec, progress=progress, overwrite=overwrite, command=command)
    device = resolve_device(spec.run.device)
    say = _Speaker(progress)
    say(f"pipeline {spec.name} ({spec.source}): writing to {spec.output}")
    output = Path(spec.output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot create the output folder {output}: {exc.strerror or exc}"
        ) from exc
    data = _unpack_stage(spec, say)
    teacher = _teacher_stage(plan, device, say, overwrite=overwrite)
    store = _generate_stage(plan, say)
    students = tuple(_student_stage(student, config, store, say) for student, config in plan.students)
    report = PipelineReport(
        name=spec.name,
        source=spec.source,
        output=spec.output,
        dataset=spec.dataset.source_spec,
        val_split=spec.dataset.val_split,
        device=str(device),
        data=data,
        teacher=teacher,
        store=store,
        students=students,
        seconds=time.perf_counter() - started,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        spec=spec.to_json(),
    )
    write_report(report)
    return report


class _Speaker:
    """Stage lines on stderr (or nothing), and which stages finished, for the message of a Ctrl-C."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.finished: list[str] = []

    def __call__(self, line: str) -> None:
        if self.enabled:
            print(line, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run stage ``name``: its errors start with its name; Ctrl-C says what the run kept."""
        try:
            yield
        except KeyboardInterrupt as exc:
            kept = f" (kept {exc.kept})" if isinstance(exc, Interrupted) and exc.kept else ""
            finished = ", ".join(self.finished) or "none"
            raise Interrupted(
                f"interrupted in stage {name}{kept}; finished stages: {finished}; "
                "re-run the same command to continue",
                kept=f"stages {finished}",
            ) from None
        except SoftLabelsError as exc:
            # The same error, its type and attributes kept (and so the CLI's one-line handling).
            exc.args = (f"stage {name}: {exc}",)
            raise
        self.finished.append(name)


def _plan(spec: PipelineSpec, *, progress: bool, overwrite: bool, command: str | None) -> _Plan:
    """Check what can be checked without running anything, and build every stage's config."""
    _check_model(spec, "teacher.model", spec.teacher.model)
    for student in spec.students:
        _check_model(spec, f"students.{student.name}.model", student.model)
    check_inputs(spec)
    data, run = spec.dataset, spec.run
    common: dict[str, Any] = {
        "dataset": data.source_spec,
        "split": data.train_split,
        "val_split": data.val_split,
        "data_root": data.data_root,
        "seq_len": data.seq_len,
        "num_workers": run.num_workers,
        "device": run.device,
        "precision": run.precision,
        "overwrite": overwrite,
        "progress": progress,
        "command": command,
    }
    teacher = _teacher_config(spec, common)
    weights = spec.teacher.weights or str(Path(spec.output) / "teacher" / RUN_FILES.final)
    generate_config = _generate_config(spec, weights, common)
    students = tuple((student, _student_config(spec, student, common)) for student in spec.students)
    return _Plan(spec, teacher, weights, generate_config, students)


def _teacher_config(spec: PipelineSpec, common: dict[str, Any]) -> TeacherConfig | None:
    teacher = spec.teacher
    # Without weights the parser has required epochs; with weights the training settings are unused.
    if teacher.weights is not None or teacher.epochs is None:
        return None
    with _section(spec, "teacher"):
        return TeacherConfig(
            **common,
            out=str(Path(spec.output) / "teacher"),
            teacher=teacher.model,
            epochs=teacher.epochs,
            **_training_options(teacher),
        )


def _generate_config(spec: PipelineSpec, weights: str, common: dict[str, Any]) -> GenerateConfig:
    gen = spec.generate
    with _section(spec, "generate"):
        encoding = EncodingSpec.create(
            gen.label_format,
            dtype=gen.dtype,
            k=gen.k,
            samples=gen.samples,
            seed=spec.run.seed if gen.label_format == "sampled" else None,  # run.seed seeds the draws
        )
        return GenerateConfig(
            dataset=common["dataset"],
            split=common["split"],
            data_root=common["data_root"],
            seq_len=common["seq_len"],
            teacher=spec.teacher.model,
            teacher_weights=weights,
            temperature=gen.temperature,
            out=gen.store,
            batch_size=gen.batch_size,
            num_workers=common["num_workers"],
            device=common["device"],
            precision=common["precision"],
            encoding=encoding,
            views=gen.views,
            augment=gen.augment,
            view_seed=spec.run.seed,  # run.seed draws the views, as it draws sampled classes
            overwrite=common["overwrite"],
            progress=common["progress"],
            command=common["command"] or f"softlabels.run_pipeline({shlex.quote(spec.source)})",
        )


def _student_config(spec: PipelineSpec, student: StudentSpec, common: dict[str, Any]) -> TrainConfig:
    with _section(spec, f"students.{student.name}"):
        return TrainConfig(
            **common,
            out=str(Path(spec.output) / "students" / student.name),
            student=student.model,
            labels=spec.generate.store if student.kd else None,
            no_kd=not student.kd,
            alpha=student.alpha,
            temperature=student.temperature,
            epochs=student.epochs,
            **_training_options(student),
        )


def _training_options(section: TeacherSpec | StudentSpec) -> dict[str, Any]:
    """The training settings teacher and student sections share, named as the trainer's configs name them."""
    return {name: getattr(section, name) for name in TRAINING_OPTIONS}


@contextlib.contextmanager
def _section(spec: PipelineSpec, key: str) -> Iterator[None]:
    """Name the file and the section in errors of the configs (which name settings as the file does)."""
    try:
        yield
    except SoftLabelsError as exc:
        raise PipelineError(f"{spec.source}: {key}: {exc}") from exc


def _check_model(spec: PipelineSpec, key: str, model: str) -> None:
    if is_model_name(model) or is_plugin_ref(model):
        return
    raise PipelineError(
        f"{spec.source}: {key}: expected a built-in model ({', '.join(BUILTIN_MODELS)}), a torchvision "
        f'classification name such as "resnet18", or a plug-in "module:callable", got "{model}"'
    )


def _unpack_stage(spec: PipelineSpec, say: _Speaker) -> StageResult | None:
    data = spec.dataset
    if data.archive is None or data.root is None:
        return None
    started = time.perf_counter()
    reused = (Path(data.root) / "train").is_dir()
    if not reused:
        say(f"stage data: unpacking {data.archive} into {data.root}")
    with say.stage("data"):
        ensure_cifar10(data.archive, data.root)
    return StageResult("reused" if reused else "unpacked", time.perf_counter() - started)


def _teacher_stage(plan: _Plan, device: torch.device, say: _Speaker, *, overwrite: bool) -> TeacherResult:
    spec = plan.spec
    started = time.perf_counter()
    if plan.teacher is None:
        say(f"stage teacher: evaluating {spec.teacher.model} with {plan.teacher_weights}")
        with say.stage("teacher"):
            scores, status = _evaluate_teacher(spec, plan.teacher_weights, device, overwrite=overwrite)
        return TeacherResult(
            spec.teacher.model,
            plan.teacher_weights,
            scores.accuracy,
            (),
            StageResult(status, time.perf_counter() - started),
            perplexity=scores.perplexity,
        )
    say(f"stage teacher: {spec.teacher.model}, {epochs(plan.teacher.epochs)}, in {plan.teacher.out}")
    with say.stage("teacher"):
        summary = train_teacher(plan.teacher)
    return TeacherResult(
        spec.teacher.model,
        summary.final_weights,
        summary.final_val_accuracy,
        _curve(summary),
        StageResult(_training_status(summary), time.perf_counter() - started),
        perplexity=summary.final_val_perplexity,
        perplexity_curve=_perplexity_curve(summary),
    )


def _generate_stage(plan: _Plan, say: _Speaker) -> StoreResult:
    config = plan.generate
    started = time.perf_counter()
    say(f"stage generate: {config.teacher} soft labels at T={config.temperature:g} into {config.out}")
    with say.stage("generate"):
        try:
            summary = generate(config)
        except StoreMismatchError as exc:
            raise StoreMismatchError(f"{exc}, or set generate.store to another location") from exc
    status = (
        "reused"
        if summary.shards_written == 0
        else ("generated" if summary.shards_written == summary.shards_total else "resumed")
    )
    return StoreResult(
        path=summary.out,
        label_format=config.encoding.format,
        dtype=config.encoding.dtype,
        temperature=config.temperature,
        num_rows=summary.num_rows,
        num_classes=summary.num_classes,
        bytes_on_disk=summary.bytes_on_disk,
        stage=StageResult(status, time.perf_counter() - started),
    )


def _student_stage(
    student: StudentSpec, config: TrainConfig, store: StoreResult, say: _Speaker
) -> StudentResult:
    started = time.perf_counter()
    method = "distilled from the store" if student.kd else "hard labels only"
    say(
        f"stage students.{student.name}: {student.model}, {epochs(student.epochs)}, {method}, in {config.out}"
    )
    with say.stage(f"students.{student.name}"):
        summary = train_student(config)
    return StudentResult(
        name=student.name,
        model=student.model,
        kd=student.kd,
        alpha=config.distillation_weight if student.kd else None,
        temperature=(student.temperature or store.temperature) if student.kd else None,
        epochs=len(summary.metrics),
        accuracy=summary.final_val_accuracy,
        best_accuracy=summary.best_val_accuracy,
        curve=_curve(summary),
        out=summary.out,
        weights=summary.final_weights,
        stage=StageResult(_training_status(summary), time.perf_counter() - started),
        perplexity=summary.final_val_perplexity,
        best_perplexity=summary.best_val_perplexity,
        perplexity_curve=_perplexity_curve(summary),
    )


def _curve(summary: TrainSummary) -> tuple[float, ...]:
    return tuple(epoch.val_accuracy for epoch in summary.metrics)


def _perplexity_curve(summary: TrainSummary) -> tuple[float, ...]:
    """Validation perplexity after each epoch (empty unless a language model was trained)."""
    return tuple(epoch.val_perplexity for epoch in summary.metrics if epoch.val_perplexity is not None)


def _training_status(summary: TrainSummary) -> str:
    if summary.epochs_run == 0:
        return "reused"
    if summary.resumed_after:
        return f"resumed after epoch {summary.resumed_after}"
    return "trained"


@dataclass(frozen=True)
class _Scores:
    """Validation accuracy, and perplexity for a language model (None otherwise)."""

    accuracy: float
    perplexity: float | None


def _evaluate_teacher(
    spec: PipelineSpec, weights: str, device: torch.device, *, overwrite: bool
) -> tuple[_Scores, str]:
    """Validation scores of given teacher weights, cached in ``<output>/teacher/evaluation.json``.

    The cache is keyed by what decides the number (model, weights' sha256, validation data), so
    new weights or new data are evaluated again; ``overwrite`` ignores it.
    """
    data = spec.dataset
    source = load_dataset(data.source_spec, data.val_split, data_root=data.data_root, seq_len=data.seq_len)
    teacher = load_job_model(spec.teacher.model, source, weights=weights, role="teacher")
    key = {
        "model": teacher.spec,
        "weights sha256": teacher.weights_sha256,
        "dataset": source.spec,
        "split": source.split,
        "fingerprint": source.fingerprint,
        "precision": spec.run.precision,
    }
    record_path = Path(spec.output) / "teacher" / TEACHER_EVALUATION
    cached = _read_evaluation(record_path)
    if not overwrite and cached is not None and cached.get("key") == key:
        perplexity = cached.get("perplexity")
        return _Scores(float(cached["accuracy"]), None if perplexity is None else float(perplexity)), "reused"
    scores = _scores(teacher.module, source, spec, device)
    write_json(
        record_path,
        {"key": key, "accuracy": scores.accuracy, "perplexity": scores.perplexity, "weights": weights},
    )
    return scores, "evaluated"


def _read_evaluation(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: evaluate again
    return record if isinstance(record, dict) else None


def _scores(
    model: torch.nn.Module, source: DatasetSource, spec: PipelineSpec, device: torch.device
) -> _Scores:
    loader = DataLoader(
        source.dataset,
        batch_size=spec.generate.batch_size,
        num_workers=spec.run.num_workers,
        pin_memory=device.type == "cuda",
    )
    loss, accuracy = evaluate(model.to(device), loader, device, spec.run.precision)
    return _Scores(accuracy, None if source.positions is None else perplexity(loss))
