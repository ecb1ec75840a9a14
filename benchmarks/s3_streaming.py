"""Does streaming a student's labels from object storage cost more than reading them from a local folder?

One store, two places: a local folder and a bucket of an S3-protocol server on loopback (moto's
server mode, started here as a subprocess; the client is the one ``softlabels`` uses, through the
standard AWS variables). Each arm trains a student for ``--epochs`` epochs with its labels
streamed (memory budget 0: blocks of ``--buffer-chunks`` whole chunks, the next block read ahead
on a thread while the current one trains), alternating the arms' order over ``--repeats``; reported
is the fastest epoch after the first of each arm and the ratio remote / local (goal: <= 1.10).

The store is the 1,000-class synthetic one of ``loader_memory.py`` (30,000 rows, float16 ``full``,
60 MB, default chunks of about 1 MiB) over tiny 3 x 8 x 8 inputs: labels are most of what an epoch
reads. The student is ``--student`` (default ``cnn-small``; ``mlp`` spends so little per sample
that the epoch is all label reading) trained with the KD loss at the store's temperature. The S3
server's own CPU time per epoch is reported too: on a small machine it competes with the student.
The loopback server adds request handling (moto is a Python server) but no network distance, so
this measures whether the read-ahead hides the object store's per-request cost, not a real
network's bandwidth.

Run: ``python benchmarks/s3_streaming.py [--epochs 3] [--repeats 2] [--batch-size 256]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch
from common import write_results
from loader_memory import SPEC, STORE, write_store

BUCKET = "bench-labels"
ARMS = ("local", "s3")


def start_s3_server() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free loopback port, with the AWS variables pointing at it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{endpoint}/", timeout=2).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the S3 server did not start")


def upload(store: Path) -> str:
    """Copy the local store into the bucket; returns its ``s3://`` location."""
    import s3fs

    files = s3fs.S3FileSystem()
    files.mkdir(BUCKET)
    files.put(str(store), f"{BUCKET}/{store.name}", recursive=True)
    return f"s3://{BUCKET}/{store.name}"


def cpu_seconds(server: subprocess.Popen[bytes]) -> float:
    """CPU seconds the server process has used so far."""
    import psutil

    times = psutil.Process(server.pid).cpu_times()
    return float(times.user + times.system)


def epoch_seconds(location: str, args: argparse.Namespace) -> list[float]:
    """Wall seconds of each epoch of a student trained on ``location``'s labels, streamed."""
    from softlabels.sources import load_model
    from softlabels.streaming import SoftLabelDataset, SoftLabelLoader
    from softlabels.training.losses import kd_loss

    torch.manual_seed(0)
    dataset = SoftLabelDataset(location, SPEC, buffer_chunks=args.buffer_chunks, memory_budget_bytes=0)
    student = load_model(
        args.student, num_classes=1000, in_channels=3, input_size=8, random_weights=True, role="student"
    ).module
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    temperature = dataset.header.provenance.temperature if dataset.header else 1.0
    seconds = []
    with SoftLabelLoader(dataset, args.batch_size, num_workers=args.workers) as loader:
        for epoch in range(args.epochs):
            dataset.set_epoch(epoch)
            started = time.perf_counter()
            for inputs, labels, _ in loader:
                loss = kd_loss(student(inputs), labels, temperature=temperature)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--buffer-chunks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--student", default="cnn-small")
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    if not STORE.exists():
        write_store()
    server, endpoint = start_s3_server()
    try:
        locations = {"local": str(STORE), "s3": upload(STORE)}
        best: dict[str, float] = {}
        server_cpu: dict[str, float] = {}
        for repeat in range(args.repeats):
            for arm in ARMS if repeat % 2 == 0 else reversed(ARMS):
                before = cpu_seconds(server)
                seconds = epoch_seconds(locations[arm], args)
                server_cpu[arm] = (cpu_seconds(server) - before) / args.epochs
                best[arm] = min(best.get(arm, float("inf")), *seconds[1:])
                shown = ", ".join(f"{value:.2f}" for value in seconds)
                print(
                    f"repeat {repeat + 1} {arm}: epochs {shown} s; S3 server CPU {server_cpu[arm]:.2f} s/epoch",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()
    ratio = best["s3"] / best["local"]
    results: dict[str, Any] = {
        "command": f"python benchmarks/s3_streaming.py --epochs {args.epochs} --repeats {args.repeats} "
        f"--batch-size {args.batch_size} --buffer-chunks {args.buffer_chunks} --workers {args.workers} "
        f"--student {args.student}",
        "store": "30,000 rows x 1,000 classes, full float16, default chunks (loader_memory.py's)",
        "server": "moto server mode on 127.0.0.1 (S3 protocol), client s3fs via zarr's FsspecStore",
        "fastest_epoch_s": best,
        # The loopback server runs on the same cores as the student: CPU a remote service would spend.
        "s3_server_cpu_s_per_epoch": round(server_cpu["s3"], 3),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "s3_over_local": round(ratio, 3),
        "goal": "<= 1.10",
        "met": ratio <= 1.10,
    }
    path = write_results("s3_streaming", results)
    print(f"s3 / local: {ratio:.3f} (goal <= 1.10); wrote {path}")


if __name__ == "__main__":
    main()
