"""EpochPlan: chunk-aware orders, rank and worker shares, and seeds that never alias."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softlabels.errors import InvalidArgumentError
from softlabels.streaming.labels import BlockLabels, label_batches
from softlabels.streaming.plan import EpochPlan, ReadBlock, SeedStream, derive_seed, keyed_rng

ROWS, CHUNK = 1000, 64  # 16 chunks, the last one short (40 rows)
PROPERTY = settings(max_examples=60, deadline=None)


def rank_rows(plan: EpochPlan, epoch: int, world_size: int) -> list[np.ndarray]:
    return [plan.rows(epoch, rank, world_size) for rank in range(world_size)]


@st.composite
def plans(draw: st.DrawFn) -> EpochPlan:
    num_rows = draw(st.integers(1, 400))
    return EpochPlan(
        num_rows,
        draw(st.integers(1, num_rows + 5)),
        seed=draw(st.integers(0, 2**64 - 1)),
        shuffle=draw(st.booleans()),
        buffer_chunks=draw(st.integers(1, 6)),
        whole=draw(st.booleans()),
    )


# ------------------------------------------------------------------------------------ properties


@PROPERTY
@given(plans(), st.integers(0, 2**20), st.integers(1, 5), st.integers(1, 4))
def test_every_row_once_per_epoch_for_any_rank_and_worker_split(
    plan: EpochPlan, epoch: int, world_size: int, num_workers: int
) -> None:
    """Every rank visits ceil(N / W) distinct rows; fewer than W visits repeat a row (the padding)."""
    by_rank = rank_rows(plan, epoch, world_size)
    share = -(-plan.num_rows // world_size)
    counts = np.bincount(np.concatenate(by_rank), minlength=plan.num_rows)
    assert counts.min() >= 1
    if plan.num_rows >= world_size:
        assert counts.max() <= 2
    assert int((counts - 1).sum()) == world_size * share - plan.num_rows < world_size
    for rank, rows in enumerate(by_rank):
        assert plan.num_rows_of(epoch, rank, world_size) == len(rows) == share
        assert len(np.unique(rows)) == len(rows)
        # Split sample by sample between the workers of a rank, still exactly the rank's rows...
        shares = [
            block.rows
            for worker in range(num_workers)
            for block in plan.worker_blocks(epoch, rank, world_size, worker, num_workers)
        ]
        together = np.concatenate(shares) if shares else np.empty(0, dtype=np.int64)
        np.testing.assert_array_equal(np.sort(together), np.sort(rows))


@PROPERTY
@given(plans(), st.integers(0, 1000), st.integers(1, 4))
def test_blocks_read_only_the_rank_rows(plan: EpochPlan, epoch: int, world_size: int) -> None:
    """A rank's blocks cover its rows exactly; one process reads whole chunks, each once."""
    for rank in range(world_size):
        blocks = plan.blocks(epoch, rank, world_size)
        if plan.whole:
            assert [block.ranges for block in blocks] == [((0, plan.num_rows),)]
            continue
        covered = sorted(r for block in blocks for r in block.ranges)
        assert sum(stop - start for start, stop in covered) == plan.num_rows_of(epoch, rank, world_size)
        for block in blocks:
            in_ranges = np.concatenate([np.arange(start, stop) for start, stop in block.ranges])
            np.testing.assert_array_equal(np.sort(block.rows), in_ranges)
        if world_size == 1:
            for start, stop in covered:
                assert start % plan.chunk_rows == 0 and (stop % plan.chunk_rows == 0 or stop == plan.num_rows)


@PROPERTY
@given(plans(), st.integers(0, 1000), st.integers(1, 3), st.integers(1, 70))
def test_label_batches_follow_the_rank_order_for_any_batch_size(
    plan: EpochPlan, epoch: int, world_size: int, batch_size: int
) -> None:
    """Batches straddling blocks carry exactly the rows the sampler cut, in the same order."""
    codes = np.arange(plan.num_rows, dtype=np.int64)

    def load(block: ReadBlock) -> BlockLabels:
        rows = np.concatenate([codes[start:stop] for start, stop in block.ranges])
        return BlockLabels({"logits": rows[:, None].astype(np.float32)}, rows)

    for rank in range(world_size):
        rows = plan.rows(epoch, rank, world_size)
        batches = list(label_batches(plan.blocks(epoch, rank, world_size), batch_size, load))
        assert [len(batch.rows) for batch in batches] == [
            len(rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)
        ]
        for index, batch in enumerate(batches):
            expected = rows[index * batch_size : (index + 1) * batch_size]
            np.testing.assert_array_equal(batch.rows, expected)
            np.testing.assert_array_equal(batch.targets, expected)
            np.testing.assert_array_equal(batch.fields["logits"][:, 0], expected)


@PROPERTY
@given(
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 4)),
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 4)),
)
def test_different_keys_never_share_a_seed(first: tuple[int, int, int], second: tuple[int, int, int]) -> None:
    if first != second:
        assert derive_seed(*first) != derive_seed(*second)


@pytest.mark.parametrize(
    ("first", "second"),
    [((2**32, 0), (0, 1)), ((0, 2**32), (1, 0)), ((1, 0), (0, 2**32)), ((5, 0), (5, 2**64 - 2**32))],
)
def test_seed_and_epoch_do_not_alias(first: tuple[int, int], second: tuple[int, int]) -> None:
    """``default_rng([seed, epoch])`` gave seed 2**32 at epoch 0 the stream of seed 0 at epoch 1."""

    def order(seed: int, epoch: int, whole: bool) -> np.ndarray:
        return EpochPlan(ROWS, 10, seed=seed, whole=whole).rows(epoch)

    for whole in (False, True):
        assert not np.array_equal(order(*first, whole), order(*second, whole))
    assert derive_seed(*first, SeedStream.CHUNK_ORDER) != derive_seed(*second, SeedStream.CHUNK_ORDER)


def test_streams_are_independent() -> None:
    draws = {stream: keyed_rng(3, 1, stream).integers(0, 2**63, 4).tolist() for stream in SeedStream}
    assert len({tuple(values) for values in draws.values()}) == len(SeedStream)


@pytest.mark.parametrize("key", [(-1, 0, 0), (0, -1, 0), (2**64, 0, 0), (0, 0, -1)])
def test_seed_keys_must_fit_64_bits(key: tuple[int, int, int]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"in \[0, 2\*\*64\)"):
        derive_seed(*key)


# ------------------------------------------------------------------------------------- examples


def test_plan_is_reproducible_and_changes_between_epochs() -> None:
    plan = EpochPlan(ROWS, CHUNK, seed=1)
    np.testing.assert_array_equal(plan.rows(0), EpochPlan(ROWS, CHUNK, seed=1).rows(0))
    assert not np.array_equal(plan.rows(0), plan.rows(1))
    assert not np.array_equal(plan.rows(0), EpochPlan(ROWS, CHUNK, seed=2).rows(0))
    assert not np.array_equal(plan.chunk_order(0), plan.chunk_order(1))


def test_plan_without_shuffle_keeps_store_order() -> None:
    np.testing.assert_array_equal(EpochPlan(ROWS, CHUNK, shuffle=False).rows(4), np.arange(ROWS))


def test_streaming_blocks_are_whole_chunks_shuffled_within_a_buffer() -> None:
    plan = EpochPlan(ROWS, CHUNK, seed=3, buffer_chunks=4)
    blocks = plan.blocks(0)
    assert len(blocks) == 4  # 16 chunks in buffers of 4
    order = plan.chunk_order(0).tolist()
    for index, block in enumerate(blocks):
        chunks = sorted(order[index * 4 : (index + 1) * 4])
        rows = np.concatenate([np.arange(*plan.chunk_bounds(c)) for c in chunks])
        assert [start % CHUNK for start, _ in block.ranges] == [0] * len(block.ranges)
        np.testing.assert_array_equal(np.sort(block.rows), rows)  # exactly the block's chunks...
        assert not np.array_equal(block.rows, rows)  # ...in a shuffled order
        np.testing.assert_array_equal(rows[block.positions()], block.rows)


def test_adjacent_chunks_are_read_as_one_range() -> None:
    block = EpochPlan(ROWS, CHUNK, shuffle=False, buffer_chunks=16).blocks(0)[0]
    assert block.ranges == ((0, ROWS),)


def test_a_rank_order_does_not_depend_on_other_ranks_workers() -> None:
    plan = EpochPlan(ROWS, CHUNK, seed=9, buffer_chunks=2)
    for world_size in (2, 3):
        for rank in range(world_size):
            alone = plan.rows(1, rank, world_size)
            for workers in (2, 4):
                split = [
                    block.rows
                    for worker in range(workers)
                    for block in plan.worker_blocks(1, rank, world_size, worker, workers)
                ]
                assert sorted(np.concatenate(split).tolist()) == sorted(alone.tolist())


@pytest.mark.parametrize(
    "arguments",
    [
        {"num_rows": 0, "chunk_rows": 4},
        {"num_rows": 5, "chunk_rows": 0},
        {"num_rows": 5, "chunk_rows": 4, "buffer_chunks": 0},
        {"num_rows": 5, "chunk_rows": 4, "seed": -1},
        {"num_rows": 5, "chunk_rows": 4, "seed": 2**64},
    ],
)
def test_plan_refuses_bad_settings(arguments: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        EpochPlan(**arguments)


@pytest.mark.parametrize(("num_rows", "world_size"), [(10, 3), (1000, 7), (1, 3), (64, 2)])
def test_ranks_get_equal_shares_and_only_the_padding_repeats(num_rows: int, world_size: int) -> None:
    """Equal shares keep every rank's batch count equal, so a distributed step never waits forever."""
    for whole in (False, True):
        plan = EpochPlan(num_rows, 4, seed=5, buffer_chunks=2, whole=whole)
        by_rank = rank_rows(plan, 3, world_size)
        share = -(-num_rows // world_size)
        assert {len(rows) for rows in by_rank} == {share}
        counts = np.bincount(np.concatenate(by_rank), minlength=num_rows)
        assert counts.min() >= 1
        padding = world_size * share - num_rows
        assert int((counts - 1).sum()) == padding
        if whole:  # the repeated rows are the first of the epoch's permutation, which rank 0 begins with
            assert set(np.flatnonzero(counts > 1).tolist()) == set(by_rank[0][:padding].tolist())


def test_one_process_blocks_are_the_shuffled_chunk_order() -> None:
    """Sharing by position leaves a single process's blocks as they were: whole chunks in chunk order."""
    plan = EpochPlan(ROWS, CHUNK, seed=11, buffer_chunks=3)
    order = plan.chunk_order(2).tolist()
    for index, block in enumerate(plan.blocks(2)):
        chunks = order[index * 3 : (index + 1) * 3]
        expected = np.concatenate([np.arange(*plan.chunk_bounds(c)) for c in sorted(chunks)])
        key = keyed_rng(11, 2, SeedStream.BLOCK_ORDER, chunks[0])
        np.testing.assert_array_equal(block.rows, key.permutation(expected))


def test_plan_refuses_a_missing_rank_worker_or_epoch() -> None:
    plan = EpochPlan(ROWS, CHUNK)
    with pytest.raises(InvalidArgumentError, match="reader 2 of 2"):
        plan.blocks(0, 2, 2)
    with pytest.raises(InvalidArgumentError, match="reader 3 of 3"):
        plan.worker_blocks(0, 0, 1, 3, 3)
    with pytest.raises(InvalidArgumentError, match="epochs count from 0"):
        plan.rows(-1)
