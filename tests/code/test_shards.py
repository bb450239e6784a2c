"""lau.shards: shard bounds fall on extraction batch boundaries, and merging checks its pieces."""

from __future__ import annotations

import pytest
import torch

from lau.errors import BadInput
from lau.shards import Shard, aligned_shard_size, merge, plan_shards, shard_ranges


def test_shard_size_is_rounded_up_to_whole_batches() -> None:
    assert aligned_shard_size(1000, 512) == 1024
    assert aligned_shard_size(1024, 512) == 1024
    assert aligned_shard_size(100, 512) == 512  # never smaller than one batch
    with pytest.raises(BadInput):
        aligned_shard_size(0, 512)


@pytest.mark.parametrize("count", [0, 1, 511, 512, 513, 4000, 4096])
def test_ranges_tile_the_images_on_batch_boundaries(count: int) -> None:
    ranges = shard_ranges(count, 1000, 512)
    covered = [i for start, stop in ranges for i in range(start, stop)]
    assert covered == list(range(count))
    assert all(start % 512 == 0 for start, _ in ranges)  # every batch of extract() stays in one shard


def test_plan_lists_train_shards_then_test_shards() -> None:
    plan = plan_shards({"train": 2500, "test": 600}, 1000, 512)
    assert [str(s) for s in plan] == ["train[0:1024]", "train[1024:2048]", "train[2048:2500]", "test[0:600]"]
    assert [s.name for s in plan] == sorted(s.name for s in plan if s.part == "train") + ["test-00000000-00000600"]
    with pytest.raises(BadInput, match="unknown image sets"):
        plan_shards({"validation": 10}, 1000, 512)


def test_merge_puts_shards_back_in_index_order() -> None:
    plan = plan_shards({"train": 10}, 4, 2)  # [0:4], [4:8], [8:10]
    pieces = [torch.arange(s.start, s.stop, dtype=torch.float32).unsqueeze(1) for s in plan]
    merged = merge(list(reversed(plan)), list(reversed(pieces)), "train", 10)  # arrival order does not matter
    assert torch.equal(merged, torch.arange(10, dtype=torch.float32).unsqueeze(1))
    assert merge([], [], "test", 0).numel() == 0


def test_merge_refuses_gaps_overlaps_and_short_shards() -> None:
    rows = torch.zeros(4, 3)
    with pytest.raises(BadInput, match="gap or overlap"):
        merge([Shard("train", 0, 4), Shard("train", 6, 10)], [rows, rows], "train", 10)
    with pytest.raises(BadInput, match="gap or overlap"):
        merge([Shard("train", 0, 4), Shard("train", 0, 4)], [rows, rows], "train", 4)
    with pytest.raises(BadInput, match="cover 4 of 8"):
        merge([Shard("train", 0, 4)], [rows], "train", 8)
    with pytest.raises(BadInput, match="holds 4 rows, expected 2"):
        merge([Shard("train", 0, 2)], [rows], "train", 2)
