"""Teacher inference over shards of chunk-aligned rows into a label store."""

from __future__ import annotations

import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader

from softlabels import __version__
from softlabels.errors import Interrupted, InvalidArgumentError, TeacherOutputError
from softlabels.format.identity import dataset_info
from softlabels.processing.generation.background import BackgroundWriter, PendingBatch
from softlabels.processing.generation.config import GenerateConfig
from softlabels.progress import Progress
from softlabels.progress import progress as show_progress
from softlabels.runtime import autocast, resolve_device
from softlabels.sources import DatasetSource, ModelSource, load_dataset, load_model, parameters_sha256
from softlabels.store import (
    Encoding,
    Layout,
    Provenance,
    StoreHeader,
    StoreWriter,
    TeacherInfo,
    WriteSummary,
    default_chunk_rows,
)

RANDOM_TEACHER_SEED = 0


@dataclass(frozen=True)
class GenerateSummary(WriteSummary):
    """What a generation run did."""

    @property
    def samples_per_second(self) -> float:
        """Rows computed this run per second (a resumed run counts only the shards it wrote)."""
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        return (
            f"Wrote {self.out}: {self.describe_rows()}, {self.samples_per_second:.0f} samples/s, "
            f"{self.seconds:.1f} s."
        )


def generate(config: GenerateConfig) -> GenerateSummary:
    """Run the teacher over the dataset once and store ``logits / T`` for every sample, resumably.

    Re-running the same configuration after an interruption writes only the missing shards.
    """
    started = time.perf_counter()
    source = load_dataset(config.dataset, config.split, data_root=config.data_root)
    if len(source) == 0:
        raise InvalidArgumentError(f"dataset {config.dataset} [{config.split}] has no samples")
    teacher = _load_teacher(config, source)
    encoding = config.encoding.build()
    device = resolve_device(config.device)
    header = _new_header(config, source, teacher, encoding, device)
    writer = StoreWriter.open(config.out, header, encoding, overwrite=config.overwrite)
    pending = writer.pending_shards()
    if pending:
        try:
            _run_teacher(config, source, teacher, writer, encoding, pending, device)
        except KeyboardInterrupt:
            total = header.layout.num_shards
            kept = total - len(writer.pending_shards())
            what = f"{kept} of {total} shards in {writer.path}"
            raise Interrupted(f"interrupted: kept {what}; re-run the same command to finish", what) from None
    writer.mark_complete()
    layout = writer.header.layout
    return GenerateSummary(
        str(writer.path),
        len(source),
        source.num_classes,
        layout.num_shards,
        len(pending),
        writer.bytes_on_disk(),
        time.perf_counter() - started,
        rows_written=sum(stop - start for start, stop in map(layout.shard_bounds, pending)),
    )


def _load_teacher(config: GenerateConfig, source: DatasetSource) -> ModelSource:
    # A fixed seed makes a --random-weights teacher the same on every run, so a resumed run's shards match.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_TEACHER_SEED)
        return load_model(
            config.teacher,
            num_classes=source.num_classes,
            in_channels=source.in_channels,
            input_size=source.input_shape[-1],
            weights=config.teacher_weights,
            random_weights=config.random_weights,
            role="teacher",
        )


def _new_header(
    config: GenerateConfig,
    source: DatasetSource,
    teacher: ModelSource,
    encoding: Encoding,
    device: torch.device,
) -> StoreHeader:
    bytes_per_row = encoding.bytes_per_row(source.num_classes)  # refuses k > C before anything is written
    chunk_rows = config.chunk_rows or default_chunk_rows(bytes_per_row)
    layout = Layout(
        encoding=encoding.name,
        encoding_params=encoding.params(),
        num_rows=len(source),
        num_classes=source.num_classes,
        chunk_rows=chunk_rows,
        shard_rows=chunk_rows * config.chunks_per_shard,
    )
    provenance = Provenance(
        teacher=TeacherInfo(
            teacher.spec,
            teacher.num_parameters,
            teacher.weights_sha256,
            teacher.weights_path,
            parameters_sha256(teacher.module),
        ),
        dataset=dataset_info(source),
        temperature=float(config.temperature),
        precision=config.precision,
        command=config.command or f"softlabels.generate({shlex.join(sys.argv)})",
        config=config.to_json(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        versions={
            "softlabels": __version__,
            "torch": torch.__version__,
            "zarr": zarr.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        # What decides the values besides the teacher and precision; a resumed run must match it.
        compute={"device": device.type, "batch_size": config.batch_size},
    )
    return StoreHeader(layout=layout, provenance=provenance)


def shard_batches(layout: Layout, shards: list[int], batch_size: int) -> list[list[int]]:
    """Batches that never cross a shard boundary, so a resumed shard is computed exactly as the first time."""
    batches: list[list[int]] = []
    for shard in shards:
        start, stop = layout.shard_bounds(shard)
        batches.extend(
            list(range(first, min(first + batch_size, stop))) for first in range(start, stop, batch_size)
        )
    return batches


def _run_teacher(
    config: GenerateConfig,
    source: DatasetSource,
    teacher: ModelSource,
    writer: StoreWriter,
    encoding: Encoding,
    pending: list[int],
    device: torch.device,
) -> None:
    model = teacher.module.to(device).eval()
    layout = writer.header.layout
    batches = shard_batches(layout, pending, config.batch_size)
    loader = DataLoader(
        source.dataset,
        batch_sampler=batches,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    background = BackgroundWriter(writer, encoding)
    try:
        with _progress(config, sum(len(b) for b in batches)) as bar:
            for rows, (inputs, targets) in zip(batches, loader, strict=True):
                background.put(_infer(model, inputs, targets, rows[0], layout, config, device))
                bar.update(len(rows))
            background.close()
    except BaseException:
        background.abort()
        raise


def _infer(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    first_row: int,
    layout: Layout,
    config: GenerateConfig,
    device: torch.device,
) -> PendingBatch:
    with torch.inference_mode(), autocast(device, config.precision):
        logits = model(inputs.to(device, non_blocking=True))
    if logits.ndim != 2 or logits.shape[1] != layout.num_classes:
        raise TeacherOutputError(
            f"teacher {config.teacher} outputs shape {tuple(logits.shape)} but the dataset has "
            f"{layout.num_classes} classes (expected [batch, {layout.num_classes}])"
        )
    scaled = logits.float() / config.temperature
    if device.type != "cuda":
        return PendingBatch(_shard_of(first_row, layout), first_row, scaled, targets, None)
    host = torch.empty(scaled.shape, dtype=scaled.dtype, pin_memory=True)
    host.copy_(scaled, non_blocking=True)
    ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
    ready.record()
    return PendingBatch(_shard_of(first_row, layout), first_row, host, targets, ready)


def _shard_of(row: int, layout: Layout) -> int:
    return row // layout.shard_rows


def _progress(config: GenerateConfig, total: int) -> Progress:
    # A bar on a terminal, a plain line every 30 s in a log file.
    return show_progress(total, desc="generate", enabled=config.progress)
