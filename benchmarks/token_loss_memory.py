"""Peak memory of one token-level distillation step (loss forward + backward) per store format, on the CPU.

A language-model student gives ``[B, L, V]`` logits (default B=32, L=64, V=30,000: 245.8 MB in
float32). Each arm computes the loss of one batch against the decoded teacher fields of one
format and back-propagates it to the student's logits:

* ``hard-labels``: the plain cross-entropy on next-token targets (:func:`cross_entropy_loss`),
  the floor every arm shares (the student's log-softmax and its gradient);
* ``full``: :func:`kd_loss` against the teacher's stored ``[B, L, V]`` rows;
* ``topk-uniform`` / ``topk-renormalize``: :func:`topk_kd_loss` on ``[B, L, K]`` fields;
* ``sampled``: :func:`sampled_kd_loss` on ``[B, L, S]`` fields.

Every arm runs in a fresh process; its inputs (student logits, teacher fields, targets with 10%
ignored positions) are made without dense temporaries, one warm-up step runs, then the process's
peak resident memory is reset (``/proc/self/clear_refs``) and one measured step runs. Reported:
the step's peak memory above what the process held before it (``peak_step_mb``, which includes the
student's gradient, ``[B, L, V]`` float32), the same in multiples of the student's logits, the
teacher fields' own bytes, the bytes all ops allocated during the step (``torch.profiler`` with
``profile_memory=True``, positive self allocations summed: what was created, not what was live at
once) and the median seconds per step. Linux only (``/proc``).

Run: ``python benchmarks/token_loss_memory.py [--batch 32] [--positions 64] [--vocab 30000] [--k 64]
[--samples 16] [--temperature 2] [--alpha 1.0] [--repeats 3]``; writes
``benchmarks/results/token_loss_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import write_results

ARMS = ("hard-labels", "full", "topk-uniform", "topk-renormalize", "sampled")
MB = 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--positions", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=30_000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arm", choices=ARMS, help="run one arm in this process and print its JSON")
    args = parser.parse_args()
    if args.arm is not None:
        print(json.dumps(measure_arm(args)))
        return
    settings = {
        name: getattr(args, name)
        for name in ("batch", "positions", "vocab", "k", "samples", "temperature", "alpha")
    }
    arms = {}
    for arm in ARMS:
        command = [sys.executable, __file__, "--arm", arm, "--repeats", str(args.repeats)]
        command += [f"--{name}={value}" for name, value in settings.items()]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        arms[arm] = json.loads(result.stdout.strip().splitlines()[-1])
    path = write_results(
        "token_loss_memory",
        {
            "command": "python benchmarks/token_loss_memory.py " + " ".join(sys.argv[1:]),
            "settings": settings,
            "student_logits_mb": 4 * args.batch * args.positions * args.vocab / MB,
            "arms": arms,
        },
    )
    print(
        "| arm | peak above the step's start (MB) | x student logits | teacher fields (MB) | allocated by ops (MB) | s/step |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for arm, figures in arms.items():
        print(
            f"| {arm} | {figures['peak_step_mb']} | {figures['peak_step_in_student_logits']} | "
            f"{figures['teacher_fields_mb']} | {figures['allocated_by_ops_mb']} | {figures['seconds_per_step']} |"
        )
    print(f"wrote {path}")


def measure_arm(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    step, teacher_bytes = _step(args, torch)
    student_bytes = 4 * args.batch * args.positions * args.vocab
    step()  # warm-up
    _reset_peak_memory()
    before = _memory("VmRSS")
    step()
    peak = _memory("VmHWM") - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    allocated = sum(max(event.self_cpu_memory_usage, 0) for event in prof.events())
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return {
        "peak_step_mb": round(peak / MB, 1),
        "peak_step_in_student_logits": round(peak / student_bytes, 2),
        "teacher_fields_mb": round(teacher_bytes / MB, 2),
        "allocated_by_ops_mb": round(allocated / MB, 1),
        "seconds_per_step": round(statistics.median(seconds), 3),
    }


def _step(args: argparse.Namespace, torch: Any) -> tuple[Any, int]:
    """The arm's step (loss, backward) over inputs made without dense temporaries, and the teacher fields' bytes."""
    from softlabels.training.losses import cross_entropy_loss, kd_loss, sampled_kd_loss, topk_kd_loss

    batch, positions, vocab = args.batch, args.positions, args.vocab
    student = torch.randn(batch, positions, vocab, requires_grad=True)
    targets = torch.randint(0, vocab, (batch, positions))
    targets[torch.rand(batch, positions) < 0.1] = -100
    options = {"temperature": args.temperature, "alpha": args.alpha}
    fields: tuple[Any, ...]
    if args.arm == "hard-labels":
        fields = ()

        def loss() -> Any:
            return cross_entropy_loss(student, targets)
    elif args.arm == "full":
        fields = (torch.randn(batch, positions, vocab),)

        def loss() -> Any:
            return kd_loss(student, fields[0], targets, **options)
    elif args.arm.startswith("topk"):
        # Distinct classes per position: K evenly spaced classes, shifted by a random offset.
        offsets = torch.randint(0, vocab, (batch, positions, 1))
        indices = (torch.arange(args.k) * (vocab // args.k) + offsets) % vocab
        values = torch.log_softmax(torch.randn(batch, positions, args.k), dim=-1) + torch.log(
            torch.tensor(0.9)
        )
        fields = (values, indices)
        residual = args.arm.removeprefix("topk-")

        def loss() -> Any:
            return topk_kd_loss(student, values, indices, targets, residual=residual, **options)
    else:
        fields = (
            torch.randint(0, vocab, (batch, positions, args.samples)),
            torch.ones(batch, positions, args.samples),
        )

        def loss() -> Any:
            return sampled_kd_loss(student, fields[0], fields[1], targets, **options)

    def step() -> None:
        loss().backward()
        student.grad = None  # freed after the step, so each step starts without a gradient

    return step, sum(field.numel() * field.element_size() for field in fields)


def _reset_peak_memory() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _memory(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


if __name__ == "__main__":
    main()
