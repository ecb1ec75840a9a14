"""Does a student trained from a label store beat the same student trained on hard labels?

For each dataset, with fixed seeds and through the library API only (``train_teacher``,
``generate``, ``convert_store``, ``train_student``):

1. train the teacher on hard labels;
2. generate a float32 ``full`` store of the training split at temperature T (the fidelity
   reference of ``format_fidelity.py``) and derive the float16 ``full`` store the students use
   with ``convert_store`` (documented to equal direct float16 generation);
3. train the student on hard labels (``no_kd``) and from the store (each ``T:alpha`` variant),
   for every seed, with identical data order, optimizer and epochs;
4. report the best validation accuracy of each, with epochs and wall times.

Runs live under ``--out`` (default ``data/bench``, ignored by git) in folders named by their
settings, so re-running reuses finished runs (the trainer skips complete epochs) and wall times
are the sums of the recorded per-epoch times.

Run: ``python benchmarks/distillation_quality.py [--datasets digits cifar10] [--kd-variants 4:0.9 ...]``
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import cifar10_root, write_results

from softlabels import EncodingSpec, generate, train_student, train_teacher
from softlabels.processing.convert import convert_store
from softlabels.training.config import TrainSummary


@dataclass(frozen=True)
class Setting:
    """One dataset's teacher, student and budget."""

    name: str
    dataset: str
    teacher: str
    teacher_epochs: int
    student: str
    student_epochs: int
    seeds: tuple[int, ...]
    temperature: float
    num_workers: int


def settings(args: argparse.Namespace) -> dict[str, Setting]:
    """The digits and CIFAR-10 settings chosen on the command line."""
    return {
        "digits": Setting(
            "digits",
            "digits",
            "cnn",
            args.digits_teacher_epochs,
            "mlp",
            args.digits_student_epochs,
            tuple(args.digits_seeds),
            args.temperature,
            0,
        ),
        "cifar10": Setting(
            "cifar10",
            f"imagefolder:{cifar10_root()}",
            args.cifar_teacher,
            args.cifar_teacher_epochs,
            args.cifar_student,
            args.cifar_student_epochs,
            tuple(args.cifar_seeds),
            args.temperature,
            args.num_workers,
        ),
    }


def trained_teacher(setting: Setting, root: Path) -> TrainSummary:
    """The setting's teacher, trained with seed 0 (or reused when its run is complete)."""
    out = root / setting.name / f"teacher-{setting.teacher}-e{setting.teacher_epochs}"
    return train_teacher(
        dataset=setting.dataset,
        teacher=setting.teacher,
        epochs=setting.teacher_epochs,
        num_workers=setting.num_workers,
        seed=0,
        out=str(out),
        progress=False,
    )


def full_stores(setting: Setting, teacher: TrainSummary, root: Path) -> dict[str, str]:
    """The float32 reference store of the training split and its float16 conversion."""
    folder = root / setting.name / f"stores-{Path(teacher.out).name}-T{setting.temperature:g}"
    full32, full16 = folder / "full-float32.zarr", folder / "full-float16.zarr"
    generate(
        dataset=setting.dataset,
        teacher=setting.teacher,
        teacher_weights=teacher.best_weights,
        temperature=setting.temperature,
        out=str(full32),
        encoding=EncodingSpec.create("full", dtype="float32"),
        num_workers=setting.num_workers,
        progress=False,
    )
    convert_store(full32, full16, EncodingSpec.create("full", dtype="float16"))
    return {"full32": str(full32), "full16": str(full16)}


def trained_student(
    setting: Setting,
    root: Path,
    seed: int,
    *,
    labels: str | None = None,
    temperature: float | None = None,
    alpha: float | None = None,
    epochs: int | None = None,
    tag: str = "hard",
) -> TrainSummary:
    """A student trained on hard labels (``labels=None``) or from ``labels``, reused when complete."""
    epochs = epochs or setting.student_epochs
    out = root / setting.name / "students" / f"{setting.student}-{tag}-e{epochs}-s{seed}"
    return train_student(
        dataset=setting.dataset,
        student=setting.student,
        labels=labels,
        no_kd=labels is None,
        temperature=temperature,
        alpha=alpha,
        epochs=epochs,
        seed=seed,
        num_workers=setting.num_workers,
        out=str(out),
        progress=False,
    )


def train_seconds(summary: TrainSummary) -> float:
    """Training wall time over all epochs, including those of an earlier (resumed) call."""
    return sum(row.seconds for row in summary.metrics)


def run_row(role: str, summaries: list[TrainSummary]) -> dict[str, Any]:
    """One table row: best validation accuracy per seed, its mean, epochs and wall time."""
    accuracies = [summary.best_val_accuracy for summary in summaries]
    return {
        "role": role,
        "best_val_accuracy": accuracies,
        "mean": statistics.mean(accuracies),
        "epochs": len(summaries[0].metrics),
        "seconds_per_run": statistics.mean(map(train_seconds, summaries)),
        "runs": [summary.out for summary in summaries],
    }


def run_setting(setting: Setting, root: Path, variants: list[tuple[float, float]]) -> dict[str, Any]:
    """Teacher, stores, hard-label students and store-trained students of one dataset."""
    teacher = trained_teacher(setting, root)
    stores = full_stores(setting, teacher, root)
    rows = [
        run_row(f"teacher {setting.teacher}", [teacher]),
        run_row(
            f"student {setting.student}, hard labels",
            [trained_student(setting, root, seed) for seed in setting.seeds],
        ),
    ]
    for temperature, alpha in variants:
        students = [
            trained_student(
                setting,
                root,
                seed,
                labels=stores["full16"],
                temperature=temperature,
                alpha=alpha,
                tag=f"kd-T{temperature:g}-a{alpha:g}",
            )
            for seed in setting.seeds
        ]
        rows.append(run_row(f"student {setting.student}, store T={temperature:g} alpha={alpha:g}", students))
    return {
        "dataset": setting.dataset,
        "store_temperature": setting.temperature,
        "seeds": list(setting.seeds),
        "teacher": setting.teacher,
        "student": setting.student,
        "stores": stores,
        "rows": rows,
    }


def markdown(name: str, result: dict[str, Any]) -> str:
    """The result of one dataset as a markdown table."""
    lines = [
        f"### {name} (seeds {result['seeds']})",
        "",
        "| model | epochs | best val acc per seed | mean | train s/run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        per_seed = ", ".join(f"{value:.2%}" for value in row["best_val_accuracy"])
        lines.append(
            f"| {row['role']} | {row['epochs']} | {per_seed} | {row['mean']:.2%} | "
            f"{row['seconds_per_run']:.0f} |"
        )
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[float, float]:
    """``T:alpha`` -> ``(T, alpha)``."""
    temperature, alpha = text.split(":")
    return float(temperature), float(alpha)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["digits", "cifar10"], choices=["digits", "cifar10"])
    parser.add_argument("--out", default="data/bench")
    parser.add_argument("--temperature", type=float, default=4.0, help="temperature the stores are made at")
    parser.add_argument(
        "--kd-variants",
        nargs="+",
        default=[(4.0, 0.9)],
        type=parse_variant,
        help="T:alpha of each store-trained student (T re-tempers the float16 full store)",
    )
    parser.add_argument("--digits-teacher-epochs", type=int, default=10)
    parser.add_argument("--digits-student-epochs", type=int, default=20)
    parser.add_argument("--digits-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cifar-teacher", default="cnn")
    parser.add_argument("--cifar-teacher-epochs", type=int, default=1)
    parser.add_argument("--cifar-student", default="cnn-small")
    parser.add_argument("--cifar-student-epochs", type=int, default=1)
    parser.add_argument("--cifar-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers for CIFAR-10")
    args = parser.parse_args()
    chosen = settings(args)
    command = "python benchmarks/distillation_quality.py " + " ".join(
        f"--{key.replace('_', '-')} "
        + (
            " ".join(f"{t:g}:{a:g}" for t, a in value)
            if key == "kd_variants"
            else " ".join(map(str, value))
            if isinstance(value, list)
            else str(value)
        )
        for key, value in vars(args).items()
    )
    for name in args.datasets:
        setting = chosen[name]
        result = run_setting(setting, Path(args.out), args.kd_variants)
        path = write_results(f"distillation_quality_{name}_{setting.student}", {"command": command, **result})
        print(markdown(name, result), end="\n\n")
        print(f"written to {path}")


if __name__ == "__main__":
    main()
