"""Which compact label format keeps what a full store keeps, on CIFAR-10?

Reuses the CIFAR-10 teacher and full stores of ``distillation_quality.py`` (same folders under
``--out``, so finished runs are reused), then for each format (float16 full, top-k for each
``--topk``, sampled for each ``--samples``):

1. ``convert_store`` the float32 full store to it (float16 values, sampling seed 0);
2. ``inspect_store(..., reference=float32 full)``: bytes on disk per sample, mean
   ``KL(full || reconstructed)``, top-1 agreement, kept reference mass, total variation;
3. train the same student from it, same seeds, epochs, T (the store's) and alpha, next to the
   hard-label student.

The 1,000-class side of the goal ("at least 20x smaller than float32 full at 1,000 classes")
is read from ``benchmarks/results/format_sizes.json`` (``benchmarks/format_sizes.py``).

Run: ``python benchmarks/format_fidelity.py [--student mlp] [--student-epochs 2] [--seeds 0]``
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from common import RESULTS, cifar10_root, write_results
from distillation_quality import Setting, full_stores, trained_student, trained_teacher

from softlabels.format.encoding_spec import EncodingSpec
from softlabels.processing.convert import convert_store
from softlabels.store.inspect import inspect_store

SIZE_GOAL = 20.0


def format_stores(full: dict[str, str], topk: list[int], samples: list[int]) -> dict[str, str]:
    """Every compared store by name: the float16 full store and conversions of the float32 one."""
    folder = Path(full["full32"]).parent
    stores = {"full float16": full["full16"]}
    for k in topk:
        out = folder / f"topk-{k}-float16.zarr"
        convert_store(full["full32"], out, EncodingSpec.create("topk", k=k, dtype="float16"))
        stores[f"topk k={k}"] = str(out)
    for count in samples:
        out = folder / f"sampled-{count}-seed0.zarr"
        convert_store(full["full32"], out, EncodingSpec.create("sampled", samples=count, seed=0))
        stores[f"sampled S={count}"] = str(out)
    return stores


def fidelity(store: str, reference: str) -> dict[str, Any]:
    """Size and fidelity of ``store`` against the float32 full ``reference``."""
    report = inspect_store(store, reference=reference)
    return {"size": report["size"], "reference": report["reference"], "teacher": report["teacher"]}


def student_accuracies(setting: Setting, root: Path, store: str | None, alpha: float) -> dict[str, Any]:
    """Best validation accuracy of the student trained from ``store`` (hard labels if None), per seed."""
    tag = "hard" if store is None else f"kd-T{setting.temperature:g}-a{alpha:g}"
    if store is not None and not store.endswith("full-float16.zarr"):
        tag += "-" + Path(store).stem
    summaries = [
        trained_student(
            setting,
            root,
            seed,
            labels=store,
            temperature=None if store is None else setting.temperature,
            alpha=None if store is None else alpha,
            tag=tag,
        )
        for seed in setting.seeds
    ]
    accuracies = [summary.best_val_accuracy for summary in summaries]
    return {
        "best_val_accuracy": accuracies,
        "mean": statistics.mean(accuracies),
        "seconds_per_run": statistics.mean(sum(row.seconds for row in s.metrics) for s in summaries),
    }


def sizes_at_1000_classes() -> list[dict[str, Any]]:
    """Bytes on disk per sample of each format at 1,000 classes and its ratio to float32 full."""
    measured = json.loads((RESULTS / "format_sizes.json").read_text())["results"]
    return [
        {
            "format": row["format"],
            "disk_bytes_per_sample": row["disk"],
            "ratio_to_fp32": row["ratio"],
            "meets_20x": row["ratio"] >= SIZE_GOAL,
        }
        for row in measured
        if row["classes"] == 1000
    ]


def markdown(rows: list[dict[str, Any]], hard: dict[str, Any], large: list[dict[str, Any]]) -> str:
    """The CIFAR-10 comparison and the 1,000-class sizes as markdown tables."""
    lines = [
        "| labels | bytes/sample | x smaller than fp32 full | mean KL | top-1 agree | kept mass | student best "
        "val acc (mean) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ref, size = row["fidelity"]["reference"], row["fidelity"]["size"]
        kl = "inf" if ref["mean_kl"] is None else f"{ref['mean_kl']:.4f}"
        per_seed = ", ".join(f"{value:.2%}" for value in row["student"]["best_val_accuracy"])
        lines.append(
            f"| {row['format']} | {size['bytes_per_sample']:.1f} | {size['fp32_full_bytes_per_sample'] / size['bytes_per_sample']:.1f} | "
            f"{kl} | {ref['top1_agreement']:.4f} | {ref['kept_mass']:.4f} | {per_seed} "
            f"({row['student']['mean']:.2%}) |"
        )
    per_seed = ", ".join(f"{value:.2%}" for value in hard["best_val_accuracy"])
    lines += [
        f"| hard labels only | - | - | - | - | - | {per_seed} ({hard['mean']:.2%}) |",
        "",
        "| format at 1,000 classes | bytes/sample on disk | x smaller than fp32 full | >= 20x |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {row['format']} | {row['disk_bytes_per_sample']:.1f} | {row['ratio_to_fp32']:.1f} | "
        f"{'yes' if row['meets_20x'] else 'no'} |"
        for row in large
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="data/bench")
    parser.add_argument("--teacher", default="cnn")
    parser.add_argument("--teacher-epochs", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--student", default="mlp")
    parser.add_argument("--student-epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--topk", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args()
    root = Path(args.out)
    setting = Setting(
        "cifar10",
        f"imagefolder:{cifar10_root()}",
        args.teacher,
        args.teacher_epochs,
        args.student,
        args.student_epochs,
        tuple(args.seeds),
        args.temperature,
        args.num_workers,
    )
    full = full_stores(setting, trained_teacher(setting, root), root)
    rows = [
        {
            "format": name,
            "store": store,
            "fidelity": fidelity(store, full["full32"]),
            "student": student_accuracies(setting, root, store, args.alpha),
        }
        for name, store in format_stores(full, args.topk, args.samples).items()
    ]
    hard = student_accuracies(setting, root, None, args.alpha)
    large = sizes_at_1000_classes()
    command = "python benchmarks/format_fidelity.py " + " ".join(
        f"--{key.replace('_', '-')} " + (" ".join(map(str, value)) if isinstance(value, list) else str(value))
        for key, value in vars(args).items()
    )
    path = write_results(
        f"format_fidelity_{args.student}_a{args.alpha:g}",
        {
            "command": command,
            "dataset": "CIFAR-10 JPEGs [train -> test]",
            "teacher": args.teacher,
            "teacher_epochs": args.teacher_epochs,
            "student": args.student,
            "student_epochs": args.student_epochs,
            "seeds": args.seeds,
            "temperature": args.temperature,
            "alpha": args.alpha,
            "reference": full["full32"],
            "formats": rows,
            "hard_labels": hard,
            "sizes_at_1000_classes": large,
        },
    )
    print(markdown(rows, hard, large))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
