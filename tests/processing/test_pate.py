"""PATE: GNMax answers, their accounting, the released store and the student trained on it."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant
from pate_helpers import member_stores

from softlabels.errors import InvalidArgumentError, StoreMismatchError
from softlabels.processing.pate import (
    GNMaxSettings,
    gnmax,
    pate_labels,
    privacy_spent,
    vote_histograms,
)
from softlabels.sources import DatasetSource
from softlabels.store import open_store


def test_vote_histograms_count_each_teachers_vote() -> None:
    votes = np.array([[0, 2], [0, 1], [1, 1]])  # 3 teachers, 2 queries
    assert vote_histograms(votes, 3).tolist() == [[2, 1, 0], [0, 2, 1]]


def test_gnmax_noise_has_the_requested_scale() -> None:
    # Two classes with counts (d, 0): the second wins when N1 - N0 > d, N1 - N0 ~ N(0, 2 sigma^2).
    sigma, gap, draws = 3.0, 2.0, 200_000
    answers = gnmax(np.tile([gap, 0.0], (draws, 1)), sigma, np.random.default_rng(0))
    flipped = float((answers.labels == 1).mean())
    estimated_sigma = gap / (math.sqrt(2.0) * NormalDist().inv_cdf(1.0 - flipped))
    assert estimated_sigma == pytest.approx(sigma, rel=0.02)
    assert answers.answered.all()


def test_threshold_check_noise_has_the_requested_scale() -> None:
    sigma1, draws = 4.0, 200_000
    histograms = np.tile([10.0, 0.0], (draws, 1))
    answers = gnmax(histograms, 1.0, np.random.default_rng(1), threshold=13.0, sigma1=sigma1)
    # Answered when 10 + N(0, sigma1^2) >= 13.
    expected = 1.0 - NormalDist(10.0, sigma1).cdf(13.0)
    assert float(answers.answered.mean()) == pytest.approx(expected, abs=0.005)


def test_queries_below_the_threshold_are_refused() -> None:
    confident, unsure = [18, 1, 1, 0], [6, 5, 5, 4]
    answers = gnmax(
        np.array([confident, unsure, confident]), 1.0, np.random.default_rng(0), threshold=14.0, sigma1=0.5
    )
    assert answers.answered.tolist() == [True, False, True]
    assert answers.labels.tolist() == [0, -1, 0]


def test_epsilon_matches_the_accountant_for_a_known_case() -> None:
    # Q GNMax answers at sigma: RDP Q * alpha / sigma^2, i.e. one Gaussian of noise multiplier sigma / sqrt(2)
    # composed Q times; computed here independently through the library.
    sigma, queries, delta = 20.0, 300, 1e-5
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(sigma / math.sqrt(2.0)), queries)
    spent = privacy_spent(sigma=sigma, answered=queries, delta=delta)
    assert spent.epsilon == pytest.approx(accountant.get_epsilon(delta), rel=1e-9)
    # And against the closed form: the RDP-to-DP conversion never exceeds the classic one.
    classic = min(
        queries * a / sigma**2 + math.log(1 / delta) / (a - 1) for a in np.linspace(1.01, 200, 20000)
    )
    assert spent.epsilon <= classic
    assert spent.epsilon > 0.5 * classic


def test_threshold_checks_are_charged_for_every_query_asked() -> None:
    # A answers (RDP A alpha / sigma^2) and Q checks (RDP Q alpha / (2 sigma1^2)) add up to one Gaussian
    # of noise multiplier 1 / sqrt(2 A / sigma^2 + Q / sigma1^2).
    sigma, sigma1, answered, asked, delta = 10.0, 15.0, 40, 100, 1e-5
    combined = 1.0 / math.sqrt(2 * answered / sigma**2 + asked / sigma1**2)
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(combined))
    spent = privacy_spent(sigma=sigma, answered=answered, delta=delta, sigma1=sigma1, checked=asked)
    assert spent.epsilon == pytest.approx(accountant.get_epsilon(delta), rel=1e-6)
    assert spent.epsilon > privacy_spent(sigma=sigma, answered=answered, delta=delta).epsilon


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"sigma": 0.0}, "noise sigma must be a positive number"),
        ({"queries": 0}, "queries must be an integer >= 1"),
        ({"delta": 1.0}, "delta must be a number in"),
        ({"threshold": 5.0}, "both a threshold and its noise sigma1"),
        ({"seed": -1}, "noise seed"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, float], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        GNMaxSettings(**{"sigma": 1.0, "queries": 10, "delta": 1e-5, **settings})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, digits_train: DatasetSource) -> list[str]:
    return member_stores(tmp_path_factory.mktemp("members"), digits_train)


def test_the_store_holds_only_accounted_answers_and_masks_the_rest(
    tmp_path: Path, members: list[str]
) -> None:
    settings = GNMaxSettings(sigma=1.0, queries=1000, delta=1e-5, threshold=4.0, sigma1=1.0, seed=3)
    summary = pate_labels(members, str(tmp_path / "p.zarr"), settings)
    store = open_store(tmp_path / "p.zarr")
    record = store.provenance.derived_from[-1]
    answered = store.answered
    assert 0 < summary.answered < 1000 and summary.answered + summary.refused == 1000
    assert int(answered.sum()) == summary.answered == record["answered"]
    assert not answered[1000:].any()  # rows beyond the queries were never asked
    rows = store.read_all()
    assert (rows.fields["counts"][answered] == 1).all() and (rows.fields["counts"][~answered] == 0).all()
    expected = privacy_spent(sigma=1.0, answered=summary.answered, delta=1e-5, sigma1=1.0, checked=1000)
    assert record["epsilon"] == expected.epsilon == summary.privacy.epsilon
    assert record["mechanism"] == "confident-gnmax" and record["refused"] == summary.refused
    assert (record["sigma"], record["threshold"], record["sigma1"], record["delta"]) == (1.0, 4.0, 1.0, 1e-5)
    assert record["noise_seed"] == 3 and record["private"] is False
    assert len(record["members"]) == 5 and store.temperature == 1.0
    truth = rows.targets[answered]
    assert float((rows.fields["indices"][answered, 0] == truth).mean()) > 0.9


def test_without_a_seed_the_noise_is_not_recorded(tmp_path: Path, members: list[str]) -> None:
    pate_labels(members, str(tmp_path / "p.zarr"), GNMaxSettings(sigma=2.0, queries=50, delta=1e-5))
    record = open_store(tmp_path / "p.zarr").provenance.derived_from[-1]
    assert record["noise_seed"] is None and record["private"] is True and record["answered"] == 50


def test_an_existing_release_is_replaced_only_with_overwrite(tmp_path: Path, members: list[str]) -> None:
    settings = GNMaxSettings(sigma=2.0, queries=50, delta=1e-5, seed=0)
    pate_labels(members, str(tmp_path / "p.zarr"), settings)
    with pytest.raises(StoreMismatchError, match="never resumed or repeated"):
        pate_labels(members, str(tmp_path / "p.zarr"), settings)
    pate_labels(members, str(tmp_path / "p.zarr"), settings, overwrite=True)


def test_the_same_teacher_twice_is_refused(tmp_path: Path, members: list[str]) -> None:
    with pytest.raises(InvalidArgumentError, match="same teacher"):
        pate_labels([*members, members[0]], str(tmp_path / "p.zarr"), GNMaxSettings(2.0, 10, 1e-5))


def test_members_of_other_data_are_refused(
    tmp_path: Path, members: list[str], digits_train: DatasetSource
) -> None:
    from softlabels.sources import load_dataset

    other = member_stores(tmp_path, load_dataset("digits", "test"), count=1)
    with pytest.raises(StoreMismatchError, match="labels other data"):
        pate_labels([*members[:2], *other], str(tmp_path / "p.zarr"), GNMaxSettings(2.0, 10, 1e-5))


def test_more_queries_than_samples_are_refused(tmp_path: Path, members: list[str]) -> None:
    with pytest.raises(InvalidArgumentError, match="exceed the 1437 samples"):
        pate_labels(members, str(tmp_path / "p.zarr"), GNMaxSettings(2.0, 5000, 1e-5))


def test_the_loader_yields_answered_rows_only(tmp_path: Path, members: list[str]) -> None:
    from softlabels.streaming.dataset import SoftLabelDataset
    from softlabels.streaming.loader import SoftLabelLoader

    settings = GNMaxSettings(sigma=1.0, queries=700, delta=1e-5, threshold=4.0, sigma1=1.0, seed=0)
    summary = pate_labels(members, str(tmp_path / "p.zarr"), settings)
    data = SoftLabelDataset(str(tmp_path / "p.zarr"), "digits", split="train", seed=0)
    with SoftLabelLoader(data, batch_size=64) as loader:
        batches = list(loader)
    assert sum(len(targets) for _, _, targets in batches) == summary.answered
    assert all(isinstance(labels, dict) and (labels["counts"] == 1).all() for _, labels, _ in batches)
    assert sum(1 for _ in data) == summary.answered


def test_the_student_trains_on_the_answers_alone(tmp_path: Path, members: list[str]) -> None:
    from softlabels import train_student

    settings = GNMaxSettings(sigma=1.0, queries=300, delta=1e-5, seed=0)
    pate_labels(members, str(tmp_path / "p.zarr"), settings)
    summary = train_student(
        labels=str(tmp_path / "p.zarr"),
        dataset="digits",
        student="mlp",
        epochs=2,
        out=str(tmp_path / "s"),
        progress=False,
    )
    assert math.isfinite(summary.metrics[-1].train_loss)
    config = (tmp_path / "s" / "config.json").read_text()
    assert '"alpha": 1.0' in config  # the public split's own labels are not used by default


def test_info_and_inspect_describe_the_answered_rows(tmp_path: Path, members: list[str]) -> None:
    from softlabels.store.info import describe_store, format_description
    from softlabels.store.inspect import inspect_store

    settings = GNMaxSettings(sigma=1.0, queries=300, delta=1e-5, threshold=4.0, sigma1=1.0, seed=0)
    summary = pate_labels(members, str(tmp_path / "p.zarr"), settings)
    report = inspect_store(str(tmp_path / "p.zarr"))
    assert all(math.isfinite(value) for value in report["teacher"].values() if isinstance(value, float))
    assert report["teacher"]["accuracy"] > 0.9  # over the answered rows only, not diluted by empty ones
    line = format_description(describe_store(str(tmp_path / "p.zarr")))
    assert f"{summary.answered} of 300 queries answered" in line and "epsilon" in line
