"""What a pipeline run produced: the results table, ``report.json`` and ``report.png``."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softlabels.training.run_dir import write_atomically, write_json

__all__ = [
    "REPORT_JSON",
    "REPORT_PNG",
    "PipelineReport",
    "StageResult",
    "StoreResult",
    "StudentResult",
    "TeacherResult",
    "epochs",
    "format_table",
    "plot_report",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
REPORT_FORMAT = "softlabels.pipeline-report"
REPORT_VERSION = 1


@dataclass(frozen=True)
class StageResult:
    """How one stage went in this run.

    Attributes:
        status: ``trained``, ``resumed after epoch N``, ``generated``, ``resumed``, ``evaluated``,
            ``unpacked`` or ``reused`` (finished earlier with the same settings; nothing recomputed).
        seconds: Wall time of the stage in this run.
    """

    status: str
    seconds: float


@dataclass(frozen=True)
class TeacherResult:
    """The teacher: its weights and validation accuracy.

    Attributes:
        weights: The weights file the labels were generated with.
        accuracy: Validation accuracy of those weights (next-token accuracy for a language model).
        curve: Validation accuracy after each epoch when the pipeline trained it, else empty.
        perplexity: Validation perplexity of a language model (None for other models).
        perplexity_curve: Validation perplexity after each epoch when the pipeline trained a
            language model, else empty.
    """

    model: str
    weights: str
    accuracy: float
    curve: tuple[float, ...]
    stage: StageResult
    perplexity: float | None = None
    perplexity_curve: tuple[float, ...] = ()


@dataclass(frozen=True)
class StoreResult:
    """The label store."""

    path: str
    label_format: str
    dtype: str | None
    temperature: float
    num_rows: int
    num_classes: int
    bytes_on_disk: int
    stage: StageResult


@dataclass(frozen=True)
class StudentResult:
    """One student.

    Attributes:
        accuracy: Validation accuracy after the last epoch (the weights in ``weights``); the
            next-token accuracy for a language model.
        best_accuracy: Best validation accuracy over the epochs (``best.pt``).
        curve: Validation accuracy after each epoch.
        alpha: The distillation weight used (None for a baseline).
        temperature: The distillation temperature used (None for a baseline).
        perplexity: Validation perplexity after the last epoch of a language model (None for
            other models); ``best_perplexity`` the lowest over the epochs and
            ``perplexity_curve`` one per epoch.
    """

    name: str
    model: str
    kd: bool
    alpha: float | None
    temperature: float | None
    epochs: int
    accuracy: float
    best_accuracy: float
    curve: tuple[float, ...]
    out: str
    weights: str
    stage: StageResult
    perplexity: float | None = None
    best_perplexity: float | None = None
    perplexity_curve: tuple[float, ...] = ()


@dataclass(frozen=True)
class PipelineReport:
    """Everything ``softlabels run`` reports; ``report.json`` holds :meth:`to_json`.

    Attributes:
        name: The pipeline's name.
        source: The pipeline file (or the built-in default).
        output: The output folder.
        dataset: The dataset spec the stages used.
        val_split: The split every accuracy is measured on.
        device: The device the stages ran on.
        data: The unpacking of ``dataset.archive`` (None without one).
        seconds: Wall time of the whole run.
        spec: The resolved pipeline, every default filled in.
    """

    name: str
    source: str
    output: str
    dataset: str
    val_split: str
    device: str
    data: StageResult | None
    teacher: TeacherResult
    store: StoreResult
    students: tuple[StudentResult, ...]
    seconds: float
    created: str
    spec: dict[str, Any]

    def baseline_for(self, student: StudentResult) -> StudentResult:
        """The hard-label baseline a distilled student is compared with: same model if any, else the first."""
        baselines = [other for other in self.students if not other.kd]
        same_model = [other for other in baselines if other.model == student.model]
        return (same_model or baselines)[0]

    @property
    def language_model(self) -> bool:
        """Whether the pipeline trains language models (its students report perplexity)."""
        return any(student.perplexity is not None for student in self.students)

    def gains(self) -> dict[str, dict[str, Any]]:
        """Per distilled student: its baseline and the accuracy difference in percentage points.

        For language models also ``perplexity_percent``: the relative change of the final
        perplexity against the baseline's, in percent (negative: distillation helped).
        """
        gains = {}
        for student in self.students:
            if student.kd:
                baseline = self.baseline_for(student)
                gain: dict[str, Any] = {
                    "baseline": baseline.name,
                    "points": round(100 * (student.accuracy - baseline.accuracy), 4),
                }
                if student.perplexity is not None and baseline.perplexity is not None:
                    change = 100 * (student.perplexity / baseline.perplexity - 1)
                    gain["perplexity_percent"] = round(change, 4)
                gains[student.name] = gain
        return gains

    def to_json(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        return {"format": REPORT_FORMAT, "version": REPORT_VERSION, **document, "kd_gains": self.gains()}


def format_table(report: PipelineReport) -> str:
    """The results table that ``softlabels run`` prints, with a closing line on what KD gained.

    Accuracy is shown after the final epoch (the weights a run leaves in ``final.pt``) and at its
    best epoch (``best.pt``). Language models show their validation perplexity after the final
    epoch and its lowest value instead, then the final next-token accuracy.
    """
    language = report.language_model
    scores = ("final ppl.", "best ppl.", "final acc.") if language else ("final acc.", "best acc.")
    blank = ("",) * len(scores)
    rows: list[tuple[str, ...]] = [("stage", "model", *scores, "size", "time", "status")]
    if report.data is not None:
        rows.append(("data", "", *blank, "", _seconds(report.data.seconds), report.data.status))
    teacher = report.teacher
    teacher_scores: tuple[str, ...]
    if language:
        best = min(teacher.perplexity_curve, default=teacher.perplexity)
        teacher_scores = (_perplexity(teacher.perplexity), _perplexity(best), _percent(teacher.accuracy))
    else:
        teacher_scores = (_percent(teacher.accuracy), _percent(max(teacher.curve, default=teacher.accuracy)))
    rows.append(
        (
            "teacher",
            teacher.model,
            *teacher_scores,
            "",
            _seconds(teacher.stage.seconds),
            _with_epochs(teacher.stage.status, len(teacher.curve)),
        )
    )
    store = report.store
    encoding = ", ".join(item for item in (store.label_format, store.dtype) if item)
    rows.append(
        (
            "store",
            f"T={store.temperature:g}",
            *blank,
            _bytes(store.bytes_on_disk),
            _seconds(store.stage.seconds),
            f"{store.stage.status} ({store.num_rows} rows, {encoding})",
        )
    )
    for student in report.students:
        method = f"KD, alpha {student.alpha:g}, T {student.temperature:g}" if student.kd else "hard labels"
        student_scores = (
            (
                _perplexity(student.perplexity),
                _perplexity(student.best_perplexity),
                _percent(student.accuracy),
            )
            if language
            else (_percent(student.accuracy), _percent(student.best_accuracy))
        )
        rows.append(
            (
                f"student {student.name}",
                student.model,
                *student_scores,
                "",
                _seconds(student.stage.seconds),
                f"{_with_epochs(student.stage.status, student.epochs)}, {method}",
            )
        )
    rows.append(("total", "", *blank, "", _seconds(report.seconds), ""))
    header, verdicts = _perplexity_summary(report) if language else _accuracy_summary(report)
    return _table_text(report, header, rows, set(range(2, 4 + len(scores))), verdicts)


def _accuracy_summary(report: PipelineReport) -> tuple[str, list[str]]:
    header = (
        f"Pipeline {report.name} ({report.source}): {report.dataset}, accuracy on split "
        f"{report.val_split!r} after the final and the best epoch, device {report.device}"
    )
    by_name = {student.name: student for student in report.students}
    verdicts = [
        f"Distillation: {name} {_percent(by_name[name].accuracy)} vs {gain['baseline']} "
        f"{_percent(by_name[gain['baseline']].accuracy)} on hard labels: {gain['points']:+.2f} points "
        "(final epoch)"
        for name, gain in report.gains().items()
    ]
    return header, verdicts


def _perplexity_summary(report: PipelineReport) -> tuple[str, list[str]]:
    header = (
        f"Pipeline {report.name} ({report.source}): {report.dataset}, perplexity on split "
        f"{report.val_split!r} after the final epoch and at its lowest, next-token accuracy after the "
        f"final epoch, device {report.device}"
    )
    by_name = {student.name: student for student in report.students}
    verdicts = [
        f"Distillation: {name} perplexity {_perplexity(by_name[name].perplexity)} vs {gain['baseline']} "
        f"{_perplexity(by_name[gain['baseline']].perplexity)} on hard labels: "
        f"{gain['perplexity_percent']:+.1f}% (final epoch; lower is better)"
        for name, gain in report.gains().items()
        if "perplexity_percent" in gain
    ]
    return header, verdicts


def _table_text(
    report: PipelineReport,
    header: str,
    rows: Sequence[tuple[str, ...]],
    right_aligned: set[int],
    verdicts: list[str],
) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    files = f"Report: {Path(report.output) / REPORT_JSON}, plot: {Path(report.output) / REPORT_PNG}"
    return "\n".join([header, "", *lines, "", *verdicts, files])


def write_report(report: PipelineReport) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.png`` into the report's (existing) output folder.

    Each file is written to a temporary sibling and renamed, so an interrupted run never leaves
    half a report. Returns both paths.
    """
    folder = Path(report.output)
    json_path, png_path = folder / REPORT_JSON, folder / REPORT_PNG
    write_json(json_path, report.to_json())
    plot_report(report, png_path)
    return json_path, png_path


def plot_report(report: PipelineReport, path: Path) -> None:
    """Two panels: accuracy per epoch of every student, and final/best accuracy per student as bars.

    Both show the teacher's accuracy as a line. Epoch ticks are whole numbers and the legends sit
    outside the data, so a 1-epoch run (one point per student) reads as well as a 100-epoch one.
    Language models are plotted by validation perplexity (lower is better) instead of accuracy.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the file is all we want
    from matplotlib import pyplot
    from matplotlib.ticker import PercentFormatter

    rows = max(1, math.ceil(len(report.students) / 3))  # legend rows below the panels
    figure, (curves, bars) = pyplot.subplots(
        1, 2, figsize=(11, 4.6 + 0.25 * rows), width_ratios=(3, 2), layout="constrained"
    )
    try:
        if report.language_model:
            _plot_perplexity_curves(curves, report)
            _plot_bars(
                bars,
                report,
                lambda student: (student.perplexity, student.best_perplexity),
                _perplexity,
                report.teacher.perplexity,
                "final (solid) and lowest (hatched) perplexity",
            )
            for axes in (curves, bars):
                axes.set_ylim(bottom=0.0)
                axes.grid(alpha=0.3, axis="y")
            measure = "perplexity"
        else:
            _plot_curves(curves, report)
            _plot_bars(
                bars,
                report,
                lambda student: (student.accuracy, student.best_accuracy),
                lambda value: f"{value:.1%}",
                report.teacher.accuracy,
                "final (solid) and best (hatched) epoch",
            )
            low = _lower_limit(report)
            for axes in (curves, bars):
                axes.set_ylim(low, 1.0)
                axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
                axes.grid(alpha=0.3, axis="y")
            measure = "accuracy"
        figure.suptitle(f"pipeline {report.name}: {report.dataset}, {measure} on [{report.val_split}]")
        figure.legend(
            handles=curves.get_legend_handles_labels()[0],
            loc="outside lower center",
            ncols=min(3, len(report.students) + 1),
            fontsize="small",
            frameon=False,
        )
        buffer = _png_bytes(figure)
    finally:
        pyplot.close(figure)
    write_atomically(path, buffer)


def _plot_curves(axes: Any, report: PipelineReport) -> None:
    from matplotlib.ticker import MaxNLocator

    longest = max((len(student.curve) for student in report.students), default=1)
    for student in report.students:
        method = "KD" if student.kd else "hard labels"
        axes.plot(
            range(1, len(student.curve) + 1),
            student.curve,
            marker="o" if len(student.curve) <= 30 else None,
            markersize=5 if len(student.curve) <= 3 else 3,
            linestyle="-" if student.kd else "--",
            color=_colour(report, student),
            label=f"{student.name} ({student.model}, {method})",
        )
    teacher = report.teacher
    axes.axhline(
        teacher.accuracy,
        color="black",
        linestyle=":",
        label=f"teacher ({teacher.model}): {_percent(teacher.accuracy)}",
    )
    axes.set_xlim(0.5, longest + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy")
    axes.set_title("per epoch", fontsize="medium")


def _plot_bars(
    axes: Any,
    report: PipelineReport,
    scores: Callable[[StudentResult], tuple[float | None, float | None]],
    shown: Callable[[float], str],
    teacher: float | None,
    title: str,
) -> None:
    """Each student's final (solid) and best (hatched) ``scores``, value on top of each bar; the teacher dotted."""
    width = 0.38
    positions = range(len(report.students))
    rotation = 90 if len(report.students) > 3 else 0  # side by side, wide labels would overlap
    for position, student in zip(positions, report.students, strict=True):
        colour = _colour(report, student)
        final, best = scores(student)
        for offset, value, hatch in ((-width / 2, final, None), (width / 2, best, "//")):
            if value is None:
                continue
            bar = axes.bar(
                position + offset, value, width, color=colour, alpha=0.85, hatch=hatch, edgecolor="white"
            )
            axes.bar_label(bar, labels=[shown(value)], fontsize="x-small", padding=2, rotation=rotation)
    if teacher is not None:
        axes.axhline(teacher, color="black", linestyle=":")
    axes.set_xticks(
        list(positions),
        [f"{s.name}\n{'KD' if s.kd else 'hard labels'}" for s in report.students],
        fontsize="small",
    )
    axes.set_title(title, fontsize="medium")


def _plot_perplexity_curves(axes: Any, report: PipelineReport) -> None:
    from matplotlib.ticker import MaxNLocator

    longest = max((len(student.perplexity_curve) for student in report.students), default=1)
    for student in report.students:
        curve = student.perplexity_curve
        axes.plot(
            range(1, len(curve) + 1),
            curve,
            marker="o" if len(curve) <= 30 else None,
            markersize=5 if len(curve) <= 3 else 3,
            linestyle="-" if student.kd else "--",
            color=_colour(report, student),
            label=f"{student.name} ({student.model}, {'KD' if student.kd else 'hard labels'})",
        )
    teacher = report.teacher
    if teacher.perplexity is not None:
        axes.axhline(
            teacher.perplexity,
            color="black",
            linestyle=":",
            label=f"teacher ({teacher.model}): {_perplexity(teacher.perplexity)}",
        )
    axes.set_xlim(0.5, max(longest, 1) + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation perplexity (lower is better)")
    axes.set_title("per epoch", fontsize="medium")


def _colour(report: PipelineReport, student: StudentResult) -> str:
    """Distilled students in blues, baselines in oranges, in table order."""
    same_kind = [other for other in report.students if other.kd == student.kd]
    shades = (
        ("#1f77b4", "#4c9ed9", "#08519c", "#6baed6")
        if student.kd
        else ("#ff7f0e", "#fdae6b", "#d94801", "#fd8d3c")
    )
    return shades[same_kind.index(student) % len(shades)]


def _lower_limit(report: PipelineReport) -> float:
    """The bottom of the accuracy axis: below every value shown, with a margin, on a 5-point grid."""
    values = [report.teacher.accuracy, *(v for s in report.students for v in (*s.curve, s.best_accuracy))]
    low = min(values) - 0.05 * max(0.05, 1.0 - min(values))
    return max(0.0, math.floor(low * 20) / 20)


def _png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def epochs(count: int) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _with_epochs(status: str, count: int) -> str:
    return f"{status}, {epochs(count)}" if count else status


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _perplexity(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"
