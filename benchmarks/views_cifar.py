"""Do augmentation-consistent stored views (issue 13) beat single-view stored labels and hard labels?

On a documented class-balanced subset of CIFAR-10 (the first ``--per-class`` training images and
``--val-per-class`` test images of every class, linked into an ImageFolder under ``--out``), through
the library API only:

1. train one teacher with augmentation (``augment=True``: random crop with padding and flip);
2. generate its labels at temperature T: one unaugmented row per sample (today's behaviour), and
   ``V`` augmented views per sample (``views=V``, recipe ``--recipe``) for each V in ``--views``,
   in the ``full`` (float16) and ``topk`` formats;
3. train the same student, for the same epochs and seeds, from hard labels and from the
   single-view store (both with ``augment=True``), and from each views store (which replays the
   stored views: the views are its augmentation);
4. report mean and standard deviation of the best validation accuracy, the store's bytes per
   sample per view, and each run's seconds per epoch against the hard-label run's (the loader
   overhead of replaying views; goal <= 1.05x).

Runs live under ``--out`` in folders named by their settings; a re-run reuses finished runs.
Results go to ``benchmarks/results/views_cifar.json``.

Run: ``python benchmarks/views_cifar.py [--per-class 300] [--epochs 8] [--views 4 16] [--seeds 0 1]``
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from common import cifar10_root, write_results

from softlabels import EncodingSpec, generate, train_student, train_teacher
from softlabels.store import open_store
from softlabels.training.config import TrainSummary


def subset(root: Path, out: Path, per_class: int, val_per_class: int) -> Path:
    """An ImageFolder of the first ``per_class`` train and ``val_per_class`` test images per class (symlinks)."""
    for split, count in (("train", per_class), ("test", val_per_class)):
        for folder in sorted((root / split).iterdir()):
            target = out / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(folder.iterdir())[:count]:
                link = target / image.name
                if not link.exists():
                    link.symlink_to(image)
    return out


def seconds_per_epoch(summary: TrainSummary) -> float:
    return statistics.mean(row.seconds for row in summary.metrics)


def row(name: str, summaries: list[TrainSummary], hard_seconds: float, store: str | None) -> dict[str, Any]:
    accuracies = [summary.best_val_accuracy for summary in summaries]
    seconds = statistics.mean(map(seconds_per_epoch, summaries))
    result: dict[str, Any] = {
        "student": name,
        "best_val_accuracy": accuracies,
        "mean": statistics.mean(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "seconds_per_epoch": seconds,
        "epoch_time_vs_hard": seconds / hard_seconds,
    }
    if store is not None:
        opened = open_store(store)
        cells = opened.num_rows * (opened.layout.views or 1)
        result["store"] = store
        result["bytes_per_sample_per_view"] = (opened.bytes_on_disk() or 0) / cells
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--teacher", default="cnn")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--student", default="cnn-small")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--views", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--recipe", default="crop=0.35:1,flip")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/bench/views_cifar"))
    args = parser.parse_args()

    data = subset(
        cifar10_root(),
        args.out / f"cifar10-{args.per_class}-{args.val_per_class}",
        args.per_class,
        args.val_per_class,
    )
    dataset = f"imagefolder:{data}"
    common = {"dataset": dataset, "num_workers": args.num_workers, "progress": False}
    teacher = train_teacher(
        teacher=args.teacher,
        epochs=args.teacher_epochs,
        augment=True,
        seed=0,
        out=str(args.out / f"teacher-{args.teacher}-e{args.teacher_epochs}"),
        **common,
    )
    print(f"teacher {args.teacher}: best val accuracy {teacher.best_val_accuracy:.4f}", flush=True)

    stores: dict[str, str] = {}
    for views in [None, *args.views]:
        for encoding in (EncodingSpec.create("full"), EncodingSpec.create("topk", k=args.k)):
            if views is None and encoding.format != "full":
                continue
            name = f"{encoding.format}-v{views or 1}"
            out = args.out / "stores" / f"{name}.zarr"
            generate(
                teacher=args.teacher,
                teacher_weights=teacher.best_weights,
                temperature=args.temperature,
                out=str(out),
                encoding=encoding,
                views=views,
                augment=None if views is None else args.recipe,
                **common,
            )
            stores[name] = str(out)
            print(f"store {name}: {open_store(out).bytes_on_disk()} bytes", flush=True)

    def students(tag: str, store: str | None) -> list[TrainSummary]:
        runs = []
        for seed in args.seeds:
            runs.append(
                train_student(
                    student=args.student,
                    labels=store,
                    no_kd=store is None,
                    epochs=args.epochs,
                    seed=seed,
                    # The views are the augmentation of a views store; the others augment the data.
                    augment=store is None or open_store(store).layout.views is None,
                    out=str(args.out / "students" / f"{args.student}-{tag}-e{args.epochs}-s{seed}"),
                    **common,
                )
            )
            print(f"student {tag} seed {seed}: {runs[-1].best_val_accuracy:.4f}", flush=True)
        return runs

    hard = students("hard", None)
    hard_seconds = statistics.mean(map(seconds_per_epoch, hard))
    rows = [row("hard labels", hard, hard_seconds, None)]
    for name, store in stores.items():
        rows.append(row(name, students(name, store), hard_seconds, store))

    results = {
        "settings": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
        "dataset": dataset,
        "teacher_best_val_accuracy": teacher.best_val_accuracy,
        "rows": rows,
    }
    print(f"wrote {write_results('views_cifar', results)}")
    for result in rows:
        print(
            f"{result['student']:>14}: {result['mean']:.4f} +- {result['std']:.4f}  "
            f"{result['seconds_per_epoch']:.1f} s/epoch ({result['epoch_time_vs_hard']:.2f}x hard)  "
            f"{result.get('bytes_per_sample_per_view', float('nan')):.1f} B/sample/view"
        )


if __name__ == "__main__":
    main()
