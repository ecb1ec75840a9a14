"""Private labels with PATE on the real MNIST test split: student accuracy against epsilon.

The 10,000 images of ``$SOFTLABELS_DATASETS/mnist`` are cut once, by a fixed seeded permutation,
into three disjoint splits of this file's plug-in dataset (``benchmarks/pate_mnist.py:mnist_split``):

* ``private`` (8,000): the teachers' data; teacher ``i`` of ``N`` trains on part ``i`` of it
  (``train_teacher(partition="i/N")``);
* ``public`` (1,000): unlabelled queries; every teacher labels it (``generate``), and
  ``pate_labels`` answers the first ``Q`` of them with GNMax (or confident GNMax);
* ``heldout`` (1,000): where every student is scored; its first 200 images (``check``) score the
  teachers after each epoch (cheaper on 2 CPU cores).

Then one student per mechanism setting trains on the answered public rows only (``train_student``
with alpha 1: the answers alone). The non-private ensemble (noiseless majority vote on every
public sample) is the reference. Everything runs through the library API, on the CPU.

Run: ``python benchmarks/pate_mnist.py [--teachers 20] [--out data/bench/pate_mnist]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATASETS, write_results  # noqa: E402

ROOT_VARIABLE = "SOFTLABELS_PATE_MNIST_ROOT"
SPLITS = {"private": (0, 8000), "public": (8000, 9000), "heldout": (9000, 10000), "check": (9000, 9200)}
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CACHE: dict[str, Any] = {}


class MnistSplit:
    """One split of the MNIST test file, a plug-in dataset that declares its fingerprint and labels."""

    def __init__(self, split: str) -> None:
        from softlabels.sources import load_dataset

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        if "source" not in _CACHE:
            _CACHE["source"] = load_dataset("torchvision:MNIST", "test", data_root=os.environ[ROOT_VARIABLE])
        source = _CACHE["source"]
        order = np.random.default_rng(0).permutation(len(source))
        start, stop = SPLITS[split]
        self.rows = np.sort(order[start:stop])
        self.base = source.dataset
        self.classes = list(source.class_names)
        labels = np.asarray(source.dataset.base.targets)  # type: ignore[attr-defined]
        self.targets = [int(label) for label in labels[self.rows]]
        self.fingerprint = hashlib.sha256(
            f"{source.fingerprint} {split} {self.rows.tolist()}".encode()
        ).hexdigest()
        self.preprocessing = source.preprocessing

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.base[int(self.rows[index])]


def mnist_split(split: str) -> MnistSplit:
    return MnistSplit(split)


@dataclass(frozen=True)
class Mechanism:
    """One release: GNMax noise, optional confident check, number of queries."""

    name: str
    sigma: float
    queries: int
    threshold: float | None = None
    sigma1: float | None = None
    private: bool = True


def data_root(workdir: Path) -> Path:
    """A torchvision layout (``MNIST/raw/``) of symlinks to the shared files."""
    source = DATASETS / "mnist"
    missing = [name for name in MNIST_FILES if not (source / name).is_file()]
    if missing:
        raise SystemExit(f"MNIST files {missing} are absent from {source} (set SOFTLABELS_DATASETS)")
    raw = workdir / "mnist-root" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        if not (raw / name).exists():
            (raw / name).symlink_to(source / name)
    return workdir / "mnist-root"


def train_teachers(args: argparse.Namespace, dataset: str, out: Path) -> list[dict[str, Any]]:
    from softlabels import EncodingSpec, generate, train_teacher

    teachers = []
    for index in range(1, args.teachers + 1):
        started = time.perf_counter()
        run = out / f"teacher-{index}-of-{args.teachers}"
        summary = train_teacher(
            dataset=dataset,
            split="private",
            val_split="check",
            teacher=args.teacher,
            epochs=args.teacher_epochs,
            batch_size=args.batch_size,
            partition=f"{index}/{args.teachers}",
            out=str(run),
            progress=False,
        )
        store = out / f"public-{index}.zarr"
        generate(
            dataset=dataset,
            split="public",
            teacher=args.teacher,
            teacher_weights=summary.final_weights,
            temperature=1.0,
            encoding=EncodingSpec.create("full", dtype="float32"),
            out=str(store),
            progress=False,
        )
        teachers.append(
            {
                "part": f"{index}/{args.teachers}",
                "check_accuracy": summary.final_val_accuracy,
                "store": str(store),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(
            f"teacher {index}/{args.teachers}: {summary.final_val_accuracy:.2%}, {teachers[-1]['seconds']} s",
            flush=True,
        )
    return teachers


def label_accuracy(store: str, dataset: str) -> dict[str, float]:
    """How often the released labels equal the true public labels, over the answered rows."""
    from softlabels.sources import load_dataset
    from softlabels.store import open_store

    labels = open_store(store)
    rows = labels.read_all()
    truth = np.asarray(load_dataset(dataset, "public").dataset.inner.targets)  # type: ignore[attr-defined]
    answered = labels.answered
    released = rows.fields["indices"][:, 0]
    return {"label_accuracy": float((released[answered] == truth[answered]).mean())}


def run_mechanism(
    args: argparse.Namespace, dataset: str, members: list[str], mechanism: Mechanism, out: Path
) -> dict[str, Any]:
    from softlabels import train_student
    from softlabels.processing.pate import GNMaxSettings, pate_labels

    store = out / f"pate-{mechanism.name}.zarr"
    settings = GNMaxSettings(
        sigma=mechanism.sigma,
        queries=mechanism.queries,
        delta=args.delta,
        threshold=mechanism.threshold,
        sigma1=mechanism.sigma1,
        seed=args.seed,
    )
    released = pate_labels(members, str(store), settings, overwrite=True)
    student = train_student(
        labels=str(store),
        dataset=dataset,
        split="public",
        val_split="heldout",
        student=args.student,
        epochs=args.student_epochs,
        batch_size=args.batch_size,
        out=str(out / f"student-{mechanism.name}"),
        overwrite=True,
        progress=False,
    )
    result = {
        **settings.to_json(),
        "name": mechanism.name,
        "answered": released.answered,
        "refused": released.refused,
        # The non-private reference's noise is negligible: its "epsilon" is meaningless, not small.
        "epsilon": released.privacy.epsilon if mechanism.private else None,
        "rdp_order": released.privacy.rdp_order,
        **label_accuracy(str(store), dataset),
        "student_final_accuracy": student.final_val_accuracy,
        "student_best_accuracy": student.best_val_accuracy,
        "student_seconds": round(student.seconds, 1),
    }
    print(
        f"{mechanism.name}: eps {result['epsilon']}, {released.answered} answered, "
        f"labels {result['label_accuracy']:.2%}, student {student.final_val_accuracy:.2%}",
        flush=True,
    )
    return result


def ensemble_accuracy(members: list[str], dataset: str) -> float:
    """Noiseless plurality vote of the teachers on the heldout split, via their public stores' teachers."""
    from softlabels.processing.pate import vote_histograms
    from softlabels.store import open_store

    votes = []
    for member in members:
        store = open_store(member)
        rows = store.read_all()
        votes.append(store.encoding.reconstruct(rows.fields, store.num_classes).argmax(axis=1))
        truth = rows.targets
    histogram = vote_histograms(np.stack(votes), 10)
    return float((histogram.argmax(axis=1) == truth).mean())


def mechanisms(args: argparse.Namespace) -> list[Mechanism]:
    # Non-private reference: noise far below one vote, so the answers are the plain plurality.
    items = [Mechanism("non-private", 1e-6, 1000, private=False)]
    items += [Mechanism(f"gnmax-s{sigma:g}-q{args.queries}", sigma, args.queries) for sigma in args.sigmas]
    items.append(
        Mechanism(f"gnmax-s{args.sigmas[-1]:g}-q{args.few_queries}", args.sigmas[-1], args.few_queries)
    )
    threshold = round(0.7 * args.teachers)
    sigma = args.sigmas[len(args.sigmas) // 2]
    items.append(Mechanism(f"confident-s{sigma:g}-t{threshold}", sigma, 1000, threshold, args.sigma1))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/bench/pate_mnist"))
    parser.add_argument("--teachers", type=int, default=20)
    parser.add_argument("--teacher", default="mlp")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student", default="mlp")
    parser.add_argument("--student-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--sigma1", type=float, default=8.0)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--few-queries", type=int, default=150)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    args = parser.parse_args()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ[ROOT_VARIABLE] = str(data_root(args.out))
    dataset = f"{Path(__file__).resolve()}:mnist_split"
    started = time.perf_counter()
    teachers = train_teachers(args, dataset, args.out)
    members = [teacher["store"] for teacher in teachers]
    ensemble = ensemble_accuracy(members, dataset)
    print(f"ensemble (public split, noiseless plurality): {ensemble:.2%}", flush=True)
    results = [run_mechanism(args, dataset, members, item, args.out) for item in mechanisms(args)]
    path = write_results(
        "pate_mnist",
        {
            "command": " ".join(sys.argv),
            "splits": {name: stop - start for name, (start, stop) in SPLITS.items()},
            "teachers": teachers,
            "teacher_mean_check_accuracy": float(np.mean([t["check_accuracy"] for t in teachers])),
            "ensemble_public_accuracy": ensemble,
            "settings": {
                "teacher": args.teacher,
                "teacher_epochs": args.teacher_epochs,
                "student": args.student,
                "student_epochs": args.student_epochs,
                "delta": args.delta,
                "noise_seed": args.seed,
            },
            "mechanisms": results,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
