"""``softlabels merge`` and ``softlabels compare``: teacher ensembles and choosing a teacher."""

from __future__ import annotations

import json

import click

from softlabels import defaults
from softlabels.cli.main import cli
from softlabels.cli.options import chunk_options, invocation, scheduler_options
from softlabels.errors import InvalidSettingError

# Options of the averaging merge; a private release takes none of them, so giving one is refused.
_AVERAGING_OPTIONS = (
    "weights",
    "mode",
    "temperature",
    "dtype",
    "chunk_rows",
    "chunks_per_shard",
    "scheduler",
    "workers",
)


def _given(option: str) -> bool:
    """Whether ``option`` was set on the command line (not left at its default)."""
    source = click.get_current_context().get_parameter_source(option)
    return source is not None and source is not click.core.ParameterSource.DEFAULT


def parse_numbers(text: str | None, setting: str) -> list[float] | None:
    """``"1,2.5,4"`` as numbers (``None`` stays ``None``), refused as one line naming ``setting``."""
    if text is None:
        return None
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        raise InvalidSettingError(
            setting, f"{setting} must be comma-separated numbers such as 1,2,4, got '{text}'"
        ) from None


@cli.command()
@click.argument("members", nargs=-1, required=True)
@click.option(
    "--out", required=True, help="The merged store (always full; derive compact ones with convert)."
)
@click.option(
    "--weights", default=None, help="One weight per member, comma-separated (normalised; default equal)."
)
@click.option(
    "--mode",
    default=defaults.MERGE_MODE,
    show_default=True,
    help=f"{' | '.join(defaults.MERGE_MODES)}: average the distributions, or full members' logits.",
)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="The merged store's T (default: the members' common T; full members are re-tempered to it).",
)
@click.option(
    "--dtype",
    type=click.Choice(defaults.VALUE_DTYPES),
    default=defaults.VALUE_DTYPE,
    show_default=True,
    help="Stored value type of the merged rows.",
)
@chunk_options()
@scheduler_options
@click.option("--overwrite", is_flag=True, help="Replace a store at --out made with other settings.")
@click.option(
    "--mechanism",
    type=click.Choice(defaults.PATE_MECHANISMS),
    default=None,
    help="Private labels (PATE): answer the first --queries samples with noisy votes instead of averaging.",
)
@click.option("--sigma", type=float, default=None, help="GNMax: noise on every vote count.")
@click.option("--threshold", type=float, default=None, help="Confident GNMax: answer only confident queries.")
@click.option("--sigma1", type=float, default=None, help="Confident GNMax: noise of the threshold check.")
@click.option("--queries", type=int, default=None, help="GNMax: answer the first Q samples of the split.")
@click.option("--delta", type=float, default=None, help="GNMax: delta of the reported (epsilon, delta).")
@click.option(
    "--noise-seed",
    type=int,
    default=None,
    help="GNMax: seed the noise and record it (experiments only: the store is then not private).",
)
def merge(
    members: tuple[str, ...],
    out: str,
    weights: str | None,
    mode: str,
    temperature: float | None,
    dtype: str,
    chunk_rows: int | None,
    chunks_per_shard: int,
    scheduler: str,
    workers: int | None,
    overwrite: bool,
    mechanism: str | None,
    sigma: float | None,
    threshold: float | None,
    sigma1: float | None,
    queries: int | None,
    delta: float | None,
    noise_seed: int | None,
) -> None:
    """Average the teacher distributions of MEMBERS (stores of the same data) into one full store.

    With --mechanism gnmax, release private labels instead (PATE): one noisy vote per query, an
    answered mask, and the (epsilon, delta) spent in the provenance.
    """
    if mechanism is not None:
        averaging_only = [f"--{name.replace('_', '-')}" for name in _AVERAGING_OPTIONS if _given(name)]
        if averaging_only:
            raise InvalidSettingError(
                "mechanism", f"{', '.join(averaging_only)} do not apply with --mechanism gnmax"
            )
        _release_private_labels(members, out, overwrite, sigma, queries, delta, threshold, sigma1, noise_seed)
        return
    gnmax_options = {"sigma": sigma, "threshold": threshold, "sigma1": sigma1, "queries": queries}
    gnmax_options.update(delta=delta, noise_seed=noise_seed)
    given = [f"--{name.replace('_', '-')}" for name, value in gnmax_options.items() if value is not None]
    if given:
        raise InvalidSettingError("mechanism", f"{', '.join(given)} apply only with --mechanism gnmax")
    from softlabels.processing.merge import merge_stores  # zarr and dask: once the options are parsed

    summary = merge_stores(
        members,
        out,
        weights=parse_numbers(weights, "weights"),
        mode=mode,
        temperature=temperature,
        dtype=dtype,
        chunk_rows=chunk_rows,
        chunks_per_shard=chunks_per_shard,
        scheduler=scheduler,
        workers=workers,
        overwrite=overwrite,
        progress=True,
        command=invocation(),
    )
    click.echo(summary.describe())


def _release_private_labels(
    members: tuple[str, ...],
    out: str,
    overwrite: bool,
    sigma: float | None,
    queries: int | None,
    delta: float | None,
    threshold: float | None,
    sigma1: float | None,
    noise_seed: int | None,
) -> None:
    """``merge --mechanism gnmax``: PATE's noisy votes through :func:`softlabels.processing.pate.pate_labels`."""
    if sigma is None or queries is None or delta is None:
        missing = [
            name
            for name, value in (("sigma", sigma), ("queries", queries), ("delta", delta))
            if value is None
        ]
        raise InvalidSettingError(missing[0], f"--{'/--'.join(missing)} required with --mechanism gnmax")
    # zarr and dp-accounting (never torch) load here, once the options are parsed
    from softlabels.processing.pate import GNMaxSettings, pate_labels

    settings = GNMaxSettings(sigma, queries, delta, threshold=threshold, sigma1=sigma1, seed=noise_seed)
    click.echo(
        pate_labels(list(members), out, settings, overwrite=overwrite, command=invocation()).describe()
    )


@cli.command()
@click.argument("stores", nargs=-1, required=True)
@click.option(
    "--temperatures",
    default=",".join(f"{t:g}" for t in defaults.ADVISORY_TEMPERATURES),
    show_default=True,
    help="Candidate temperatures of the advisory, comma-separated (full stores; the stored T is added).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def compare(stores: tuple[str, ...], temperatures: str, as_json: bool) -> None:
    """Teacher accuracy, NLL, ECE, entropy, top-1 agreement and a temperature advisory of STORES."""
    candidates = parse_numbers(temperatures, "temperatures") or []
    from softlabels.store.compare import compare_stores, format_comparison

    report = compare_stores(stores, temperatures=candidates)
    click.echo(json.dumps(report, indent=2) if as_json else format_comparison(report))
