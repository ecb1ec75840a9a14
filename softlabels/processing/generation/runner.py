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
from softlabels.defaults import is_cluster
from softlabels.errors import InvalidArgumentError, TeacherOutputError
from softlabels.format.encodings import cell_encoding
from softlabels.format.identity import dataset_info
from softlabels.processing.generation.background import BackgroundWriter, PendingBatch
from softlabels.processing.generation.config import GenerateConfig
from softlabels.processing.generation.select import select_on_device
from softlabels.processing.shards import interrupted_keeping
from softlabels.progress import Progress
from softlabels.progress import progress as show_progress
from softlabels.runtime import autocast, resolve_device
from softlabels.sources import DatasetSource, ModelSource, load_dataset, load_model, parameters_sha256
from softlabels.sources.augment import ViewsOf
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
    source = _load_source(config)
    teacher = _load_teacher(config, source)
    encoding = config.encoding.build()
    if is_cluster(config.scheduler):
        # Imported here: dask.distributed loads only for a cluster run.
        from softlabels.processing.generation.distributed import generate_on_cluster

        writer, pending = generate_on_cluster(config, source, teacher, encoding)
    else:
        writer, pending = _generate_in_process(config, source, teacher, encoding)
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


def _generate_in_process(
    config: GenerateConfig, source: DatasetSource, teacher: ModelSource, encoding: Encoding
) -> tuple[StoreWriter, list[int]]:
    """Open (or resume) the store and compute its pending shards here; returns the writer and those shards."""
    device = resolve_device(config.device)
    header = _new_header(config, source, teacher, encoding, device)
    writer = StoreWriter.open(config.out, header, encoding, overwrite=config.overwrite)
    pending = writer.pending_shards()
    if pending:
        with interrupted_keeping(writer):
            _run_teacher(config, source, teacher, writer, encoding, pending, device)
    return writer, pending


def _load_source(config: GenerateConfig) -> DatasetSource:
    source = load_dataset(config.dataset, config.split, data_root=config.data_root, seq_len=config.seq_len)
    if len(source) == 0:
        raise InvalidArgumentError(f"dataset {config.dataset} [{config.split}] has no samples")
    if config.views is not None:
        _check_images(source)
    return source


def _check_images(source: DatasetSource) -> None:
    """Views crop and flip images: refuse anything else before the teacher loads."""
    if len(source.input_shape) != 3 or not source.input_dtype.is_floating_point:
        raise InvalidArgumentError(
            f"views augment images [C, H, W], but {source.spec} has {source.input_dtype} inputs "
            f"of shape {list(source.input_shape)}"
        )


def _views_of(config: GenerateConfig, source: DatasetSource) -> ViewsOf | None:
    """The dataset as V augmented views per sample, or None for a store without views."""
    recipe = config.view_recipe
    if recipe is None or config.views is None:
        return None
    height, width = source.input_shape[-2:]
    return ViewsOf(source.dataset, recipe, config.view_seed, config.views, (height, width))


def _load_teacher(config: GenerateConfig, source: DatasetSource) -> ModelSource:
    # A fixed seed makes a --random-weights teacher the same on every run, so a resumed run's shards match.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_TEACHER_SEED)
        return load_model(
            config.teacher,
            num_classes=source.num_classes,
            input_shape=source.input_shape,
            input_dtype=source.input_dtype,
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
    label_axes = (
        (source.positions,)
        if source.positions is not None
        else ()
        if config.views is None
        else (config.views,)
    )
    recipe = config.view_recipe
    # Refuses k > C before anything is written; a token sample holds one row per position.
    bytes_per_row = cell_encoding(encoding, label_axes).bytes_per_row(source.num_classes)
    chunk_rows = config.chunk_rows or default_chunk_rows(bytes_per_row)
    layout = Layout(
        encoding=encoding.name,
        encoding_params=encoding.params(),
        num_rows=len(source),
        num_classes=source.num_classes,
        chunk_rows=chunk_rows,
        shard_rows=chunk_rows * config.chunks_per_shard,
        positions=source.positions,
        views=config.views,
        view_recipe=None if recipe is None else recipe.spec(),
        view_seed=None if recipe is None else config.view_seed,
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
    views = _views_of(config, source)
    loader = DataLoader(
        source.dataset if views is None else views,
        batch_sampler=batches,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    # The writer's encoding covers whole samples (all their positions), as the selection needs.
    background = BackgroundWriter(writer, writer.encoding)
    try:
        with _progress(config, sum(len(b) for b in batches)) as bar:
            for rows, (inputs, targets) in zip(batches, loader, strict=True):
                pending_batch = _infer(
                    model, inputs, targets, rows[0], writer.encoding, layout, config, device
                )
                if views is not None:
                    pending_batch.view_params = views.params(np.asarray(rows))
                background.put(pending_batch)
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
    encoding: Encoding,
    layout: Layout,
    config: GenerateConfig,
    device: torch.device,
) -> PendingBatch:
    """Run the teacher on one batch and select on the device what the encoding stores.

    Compact formats hand only their selection (``[B, (L,) K]`` or ``[B, (L,) S]``) to the host.
    """
    with torch.inference_mode(), autocast(device, config.precision):
        logits = _teacher_logits(model, inputs.to(device, non_blocking=True), layout)
        _check_teacher_output(logits, layout, config.teacher)
        scaled = logits.float() / config.temperature
        selected = select_on_device(encoding, scaled, first_row)
        finite = torch.isfinite(scaled).flatten(1).all(dim=1)
    shard = _shard_of(first_row, layout)
    if device.type != "cuda":
        return PendingBatch(shard, first_row, selected, targets, None, finite)
    on_host = {name: _copy_to_pinned(tensor) for name, tensor in selected.items()}
    finite_on_host = _copy_to_pinned(finite)
    ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
    ready.record()
    return PendingBatch(shard, first_row, on_host, targets, ready, finite_on_host)


def _teacher_logits(model: torch.nn.Module, inputs: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The teacher's logits; views ``[B, V, C, H, W]`` run as one batch of ``B * V`` images, then ``[B, V, C]``."""
    if layout.views is None:
        return model(inputs)  # type: ignore[no-any-return]
    logits: torch.Tensor = model(inputs.flatten(0, 1))
    return logits.reshape(inputs.shape[0], layout.views, *logits.shape[1:])


def _check_teacher_output(logits: torch.Tensor, layout: Layout, teacher: str) -> None:
    expected = (*layout.label_axes, layout.num_classes)
    if logits.ndim == len(expected) + 1 and tuple(logits.shape[1:]) == expected:
        return
    positions = "" if layout.positions is None else f" and {layout.positions} positions per sample"
    raise TeacherOutputError(
        f"teacher {teacher} outputs shape {tuple(logits.shape)} but the dataset has "
        f"{layout.num_classes} classes{positions} (expected [batch, {', '.join(map(str, expected))}])"
    )


def _copy_to_pinned(tensor: torch.Tensor) -> torch.Tensor:
    """Start copying a device tensor to pinned host memory; read it only once the batch's event fired."""
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host


def _shard_of(row: int, layout: Layout) -> int:
    return row // layout.shard_rows


def _progress(config: GenerateConfig, total: int) -> Progress:
    # A bar on a terminal, a plain line every 30 s in a log file.
    return show_progress(total, desc="generate", enabled=config.progress)
