"""Does ``softlabels compare``'s ranking of teachers predict which store trains the best student?

On digits, through the library API only:

1. train several teachers (``mlp``, ``cnn-small``, ``cnn``, each for 1, 3 and 10 epochs, seed 0);
2. store each one's final weights over the training split at T=4 (full, float16), as ``generate``
   does;
3. ``compare_stores`` them: teacher accuracy, NLL at T=1, ECE and entropy from the stores alone;
4. train the same student (``mlp``, alpha 0.9, the store's T) from every store for each seed, and
   the hard-label baseline;
5. measure the Spearman rank correlation between ``compare``'s figures (NLL: lower is better;
   accuracy) and the students' mean final validation accuracy;
6. merge the best two and three teachers by ``compare``'s NLL ranking (chosen from the stores, never from the
   students' results) into one ensemble store and train the same student from it.

Runs live under ``--out`` (default ``data/bench/teacher_choice``, ignored by git); re-running reuses
finished teachers, stores and students.

Run: ``python benchmarks/teacher_choice.py [--seeds 0 1 2] [--student-epochs 10] [--ensemble-sizes 2 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from common import write_results
from scipy.stats import spearmanr

from softlabels import generate, train_student, train_teacher
from softlabels.processing.merge import merge_stores
from softlabels.store.compare import compare_stores
from softlabels.training.config import TrainSummary

DATASET = "digits"
TEMPERATURE = 4.0


def teacher_store(model: str, epochs: int, root: Path) -> str:
    """A store of ``model`` trained for ``epochs`` (final weights), made once."""
    teacher = train_teacher(
        dataset=DATASET,
        teacher=model,
        epochs=epochs,
        seed=0,
        out=str(root / f"teacher-{model}-e{epochs}"),
        progress=False,
    )
    store = root / "stores" / f"{model}-e{epochs}.zarr"
    generate(
        dataset=DATASET,
        teacher=model,
        teacher_weights=teacher.final_weights,
        temperature=TEMPERATURE,
        out=str(store),
        progress=False,
    )
    return str(store)


def student(root: Path, name: str, labels: str | None, seed: int, epochs: int) -> TrainSummary:
    return train_student(
        dataset=DATASET,
        student="mlp",
        labels=labels,
        no_kd=labels is None,
        epochs=epochs,
        seed=seed,
        out=str(root / "students" / f"{name}-e{epochs}-s{seed}"),
        progress=False,
    )


def student_row(root: Path, name: str, labels: str | None, seeds: list[int], epochs: int) -> dict[str, Any]:
    runs = [student(root, name, labels, seed, epochs) for seed in seeds]
    finals = [run.final_val_accuracy for run in runs]
    return {
        "final_val_accuracy": finals,
        "mean_final": statistics.mean(finals),
        "mean_best": statistics.mean(run.best_val_accuracy for run in runs),
    }


def ensemble_row(
    root: Path, members: list[str], stores: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """``merge`` of ``members`` (equal weights, probs mode, T=4), ``compare``'s figures for it and its students."""
    ensemble = root / "stores" / f"ensemble-{'+'.join(members)}.zarr"
    merge_stores([stores[name] for name in members], ensemble)
    report = compare_stores([str(ensemble)])["stores"][0]
    return {
        "teacher": f"ensemble of {', '.join(members)}",
        "accuracy": report["accuracy"],
        "nll_t1": report["nll"],
        "ece_t1": report["ece"],
        "entropy_t4": report["mean_entropy"],
        **student_row(root, f"ensemble-{len(members)}", str(ensemble), args.seeds, args.student_epochs),
    }


def spearman(xs: list[float], ys: list[float]) -> float:
    result = spearmanr(xs, ys)
    return float(result.statistic)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="data/bench/teacher_choice")
    parser.add_argument("--teachers", nargs="+", default=["mlp", "cnn-small", "cnn"])
    parser.add_argument("--teacher-epochs", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--student-epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ensemble-sizes", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    root = Path(args.out)
    started = time.perf_counter()

    stores = {
        f"{model}-e{epochs}": teacher_store(model, epochs, root)
        for model in args.teachers
        for epochs in args.teacher_epochs
    }
    report = compare_stores(list(stores.values()))
    by_location = {entry["location"]: entry for entry in report["stores"]}
    ranked = [name for location in report["ranking_by_nll"] for name, at in stores.items() if at == location]

    rows: list[dict[str, Any]] = []
    for name, location in stores.items():
        entry = by_location[location]
        rows.append(
            {
                "teacher": name,
                "accuracy": entry["accuracy"],
                "nll_t1": entry["nll"],
                "ece_t1": entry["ece"],
                "entropy_t4": entry["mean_entropy"],
                **student_row(root, name, location, args.seeds, args.student_epochs),
            }
        )
    ensembles = [ensemble_row(root, ranked[:size], stores, args) for size in args.ensemble_sizes]
    baseline = student_row(root, "hard", None, args.seeds, args.student_epochs)

    students = [row["mean_final"] for row in rows]
    correlation = {
        "nll_vs_student": spearman([-row["nll_t1"] for row in rows], students),
        "accuracy_vs_student": spearman([row["accuracy"] for row in rows], students),
        "ece_vs_student": spearman([-row["ece_t1"] for row in rows], students),
        "entropy_vs_student": spearman([-row["entropy_t4"] for row in rows], students),
    }
    best_by_nll = ranked[0]
    best_student = max(rows, key=lambda row: row["mean_final"])["teacher"]
    result = {
        "command": "python benchmarks/teacher_choice.py "
        f"--teachers {' '.join(args.teachers)} --teacher-epochs {' '.join(map(str, args.teacher_epochs))} "
        f"--student-epochs {args.student_epochs} --seeds {' '.join(map(str, args.seeds))} "
        f"--ensemble-sizes {' '.join(map(str, args.ensemble_sizes))}",
        "dataset": DATASET,
        "temperature": TEMPERATURE,
        "student": "mlp",
        "seeds": args.seeds,
        "rows": rows,
        "ensembles": ensembles,
        "hard_label_baseline": baseline,
        "spearman": correlation,
        "ranking_by_nll": ranked,
        "best_by_nll": best_by_nll,
        "best_student_teacher": best_student,
        "compare": report,
        "seconds_this_run": time.perf_counter() - started,  # finished runs are reused
    }
    path = write_results("teacher_choice", result)
    print(markdown(result))
    print(f"written to {path} ({result['seconds_this_run']:.0f} s this run)")


def markdown(result: dict[str, Any]) -> str:
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [
        f"| teacher (digits, T=4) | teacher acc. | NLL at T=1 | ECE at T=1 | entropy at T=4 | mlp student, final acc. (seeds {seeds}) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(result["rows"], key=lambda row: row["nll_t1"]) + result["ensembles"]:
        per_seed = ", ".join(f"{value:.2%}" for value in row["final_val_accuracy"])
        lines.append(
            f"| {row['teacher']} | {row['accuracy']:.2%} | {row['nll_t1']:.3f} | {row['ece_t1']:.3f} | "
            f"{row['entropy_t4']:.2f} | {row['mean_final']:.2%} ({per_seed}) |"
        )
    baseline = result["hard_label_baseline"]
    per_seed = ", ".join(f"{value:.2%}" for value in baseline["final_val_accuracy"])
    lines.append(f"| hard labels (no teacher) | | | | | {baseline['mean_final']:.2%} ({per_seed}) |")
    lines.append("")
    lines.append(
        "Spearman rank correlation with the students' mean final accuracy: "
        + ", ".join(f"{name} {value:+.2f}" for name, value in result["spearman"].items())
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
