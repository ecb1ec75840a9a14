"""How long a user waits for the error of a bad argument or a bad pipeline file (issue goal: < 1.5 s).

Every case is a real ``softlabels`` invocation in a fresh interpreter (what a shell does), timed
from start to exit; the median of ``--repeats`` runs is reported per case, next to the time of a
bare ``import torch`` on the same machine for scale. Every case must exit with code 1 (or 2 for
click's own usage errors) and one ``error:`` line; the script stops if one does not.

    python benchmarks/error_latency.py --repeats 5
    python benchmarks/error_latency.py --repeats 5 --source /tmp/old-checkout --name error_latency_before

``--source`` runs the ``softlabels`` package of another checkout (e.g. ``git archive HEAD`` unpacked
somewhere) to measure the same cases before a change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT, write_results


def generate_args(temperature: str, *extra: str) -> tuple[str, ...]:
    """``generate`` of a random-weights mlp on digits at ``temperature``, plus ``extra`` options."""
    return (
        "generate",
        "--dataset",
        "digits",
        "--teacher",
        "mlp",
        "--random-weights",
        "--temperature",
        temperature,
        *extra,
    )


# (case, arguments, expected exit code): one bad setting each, as users mistype them.
CASES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    (
        "generate --temperature 0",
        generate_args("0", "--out", "{tmp}/s.zarr"),
        1,
    ),
    (
        "generate --format topk without --k",
        generate_args("4", "--format", "topk", "--out", "{tmp}/s.zarr"),
        1,
    ),
    (
        "generate --device gpu",
        generate_args("4", "--device", "gpu", "--out", "{tmp}/s.zarr"),
        1,
    ),
    (
        "train-student --epochs 0",
        (
            "train-student",
            "--dataset",
            "digits",
            "--student",
            "mlp",
            "--no-kd",
            "--epochs",
            "0",
            "--out",
            "{tmp}/run",
        ),
        1,
    ),
    (
        "train-student --lr -1",
        (
            "train-student",
            "--dataset",
            "digits",
            "--student",
            "mlp",
            "--no-kd",
            "--epochs",
            "1",
            "--lr",
            "-1",
            "--out",
            "{tmp}/run",
        ),
        1,
    ),
    (
        "train-student without --labels",
        ("train-student", "--dataset", "digits", "--student", "mlp", "--epochs", "1", "--out", "{tmp}/run"),
        1,
    ),
    ("convert --to topk without --k", ("convert", "{tmp}/missing.zarr", "{tmp}/out.zarr", "--to", "topk"), 1),
    ("run --set students.kd.epocs=3", ("run", "--set", "students.kd.epocs=3", "--out", "{tmp}/p"), 1),
    ("run --set generate.temperature=0", ("run", "--set", "generate.temperature=0", "--out", "{tmp}/p"), 1),
    (
        "run cifar10.toml without its data",
        ("run", str(REPO_ROOT / "pipelines" / "cifar10.toml"), "--out", "{tmp}/p"),
        1,
    ),
    (
        "train-student --optimizer adam (click)",
        (
            "train-student",
            "--dataset",
            "digits",
            "--student",
            "mlp",
            "--epochs",
            "1",
            "--optimizer",
            "adam",
            "--out",
            "{tmp}/run",
        ),
        2,
    ),
)


def time_command(command: list[str], env: dict[str, str], cwd: str, expected: int) -> float:
    started = time.perf_counter()
    # Not run from the checkout: ``python -c`` would import the package in the current directory.
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != expected:
        sys.exit(f"{' '.join(command)}: exit {result.returncode}, expected {expected}\n{result.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", type=Path, default=None, help="Checkout whose softlabels package to run.")
    parser.add_argument("--name", default="error_latency", help="Results file name (without .json).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        # A user without the CIFAR-10 data: an empty home and no SOFTLABELS_DATASETS.
        env = {key: value for key, value in os.environ.items() if key != "SOFTLABELS_DATASETS"}
        env |= {"HOME": scratch, "XDG_CACHE_HOME": f"{scratch}/cache"}
        if args.source is not None:
            env["PYTHONPATH"] = str(args.source.resolve())
        entry = [sys.executable, "-c", "from softlabels.cli import main; main()"]
        medians: dict[str, float] = {}
        import_torch = statistics.median(
            time_command([sys.executable, "-c", "import torch"], env, scratch, 0) for _ in range(args.repeats)
        )
        for case, arguments, expected in CASES:
            command = [*entry, *(part.format(tmp=scratch) for part in arguments)]
            medians[case] = statistics.median(
                time_command(command, env, scratch, expected) for _ in range(args.repeats)
            )

    print(f"| bad invocation | median of {args.repeats} (s) |\n| --- | --- |")
    for case, seconds in medians.items():
        print(f"| `{case}` | {seconds:.2f} |")
    print(f"| (for scale: `python -c 'import torch'`) | {import_torch:.2f} |")
    path = write_results(
        args.name,
        {
            "command": " ".join(["python", "benchmarks/error_latency.py", *sys.argv[1:]]),
            "repeats": args.repeats,
            "source": str(args.source) if args.source else "this checkout",
            "median_seconds": medians,
            "import_torch_seconds": import_torch,
            "goal_seconds": 1.5,
            "worst_case": max(medians, key=lambda case: medians[case]),
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
