"""A store's description for ``softlabels info``: provenance, shape, format, completeness, size."""

from __future__ import annotations

import os
from typing import Any

from softlabels.store.reader import open_store


def describe_store(location: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything ``info`` shows, as JSON-ready data (incomplete stores included)."""
    store = open_store(location, allow_incomplete=True)
    layout = store.layout
    done = int(store.shards_done().sum())
    return {
        "location": store.location,
        "format": store.header.format,
        "version": store.header.version,
        "encoding": layout.encoding,
        "encoding_params": layout.encoding_params,
        "num_rows": layout.num_rows,
        "num_classes": layout.num_classes,
        "views": layout.views,
        "view_recipe": layout.view_recipe,
        "view_seed": layout.view_seed,
        "positions": layout.positions,
        "chunk_rows": layout.chunk_rows,
        "shard_rows": layout.shard_rows,
        "arrays": {
            spec.name: {"row_shape": list(spec.row_shape), "dtype": spec.dtype}
            for spec in store.encoding.fields(layout.num_classes)
        },
        "complete": store.complete,
        "shards_done": done,
        "shards_total": layout.num_shards,
        "bytes_on_disk": store.bytes_on_disk(),
        "provenance": store.header.to_json()["provenance"],
    }


def format_description(description: dict[str, Any]) -> str:
    """Human-readable lines for ``info`` without ``--json``."""
    provenance = description["provenance"]
    teacher, dataset = provenance["teacher"], provenance["dataset"]
    size = description["bytes_on_disk"]
    arrays = ", ".join(
        f"{name} {spec['dtype']}{spec['row_shape']}" for name, spec in description["arrays"].items()
    )
    status = "complete" if description["complete"] else "INCOMPLETE"
    lines = [
        f"store       {description['location']}",
        f"format      {description['format']} v{description['version']}, encoding {description['encoding']} "
        f"{description['encoding_params']}",
        f"shape       {_format_shape(description)}; arrays: {arrays}",
        *_format_views(description),
        f"chunks      {description['chunk_rows']} rows per chunk, {description['shard_rows']} rows per shard",
        f"status      {status}: {description['shards_done']} of {description['shards_total']} shards written",
        f"size        {_format_size(size, description['num_rows'])}",
        f"teacher     {teacher['spec']} ({teacher['num_parameters']:,} parameters), weights sha256 "
        f"{teacher['weights_sha256'] or 'none (random or plug-in)'}",
        f"dataset     {dataset['spec']} [{dataset['split']}], {dataset['num_rows']} samples, "
        f"{dataset['num_classes']} classes, fingerprint {dataset['fingerprint'][:16]}...",
        f"temperature {provenance['temperature']} (precision {provenance['precision']})",
        f"created     {provenance['created']} by: {provenance['command']}",
        f"versions    {', '.join(f'{k} {v}' for k, v in provenance['versions'].items())}",
    ]
    lines.extend(f"derived     {_format_derivation(step)}" for step in provenance.get("derived_from", ()))
    return "\n".join(lines)


def _format_shape(description: dict[str, Any]) -> str:
    """``360 samples x 10 classes``, with the label axes between (``x 4 views x 64 positions``)."""
    axes = "".join(
        f" x {description[axis]} {axis}" for axis in ("views", "positions") if description.get(axis)
    )
    return f"{description['num_rows']} samples{axes} x {description['num_classes']} classes"


def _format_views(description: dict[str, Any]) -> list[str]:
    """``views  4 per sample, recipe crop=0.35:1,flip, seed 0`` for a store of replayable views."""
    if not description.get("view_recipe"):
        return []
    return [
        f"views       {description['views']} per sample, recipe {description['view_recipe']}, "
        f"seed {description['view_seed']}"
    ]


def _format_size(size: int | None, num_rows: int) -> str:
    if size is None:
        return "unknown (not a local folder)"
    return f"{size / 1e6:.3f} MB ({size / max(1, num_rows):.1f} B/sample)"


def _format_derivation(step: dict[str, Any]) -> str:
    """One conversion record, e.g. ``convert of /s/full.zarr (full {...} -> topk {...}) at <time>``, or a merge."""
    if step.get("operation") == "pate-gnmax":
        return _format_private_release(step)
    if step.get("operation") == "import":
        return (
            f"import of {step.get('source')} (sha256 {str(step.get('source_sha256'))[:16]}..., "
            f"{step.get('source_kind')}) from teacher {step.get('teacher_name')} at T={step.get('temperature')} "
            f"-> {_format_encoding(step.get('encoding'))} at {step.get('created')}"
        )
    if isinstance(step.get("members"), list):
        members = ", ".join(
            f"{member.get('location')} ({_format_encoding(member.get('encoding'))}, T={member.get('temperature')}, "
            f"weight {member.get('weight')})"
            for member in step["members"]
            if isinstance(member, dict)
        )
        return (
            f"{step.get('operation', 'derived')} ({step.get('mode')} mode) of {members} -> "
            f"{_format_encoding(step.get('encoding'))} at {step.get('created')}"
        )
    return (
        f"{step.get('operation', 'derived')} of {step.get('source')} ({_format_encoding(step.get('source_encoding'))}"
        f" -> {_format_encoding(step.get('encoding'))}) at {step.get('created')}"
    )


def _format_private_release(step: dict[str, Any]) -> str:
    """A PATE release: the mechanism, its noise, what was answered and the privacy spent."""
    check = (
        f", threshold {step.get('threshold')} (sigma1 {step.get('sigma1')})"
        if step.get("threshold") is not None
        else ""
    )
    seed = (
        ""
        if step.get("noise_seed") is None
        else f"; noise seed {step.get('noise_seed')} recorded: not private"
    )
    teachers = len(step.get("members") or ())
    return (
        f"pate-gnmax of {teachers} teachers: {step.get('mechanism')} sigma {step.get('sigma')}{check}; "
        f"{step.get('answered')} of {step.get('queries')} queries answered, {step.get('refused')} refused, "
        f"{step.get('not_asked')} rows not asked (masked); epsilon {step.get('epsilon')} at delta "
        f"{step.get('delta')}{seed}; at {step.get('created')}"
    )


def _format_encoding(encoding: Any) -> str:
    return f"{encoding.get('name')} {encoding.get('params')}" if isinstance(encoding, dict) else str(encoding)
