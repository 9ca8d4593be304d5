"""UserSums: per-user sums added batch by batch equal mean_by_user over every row at once."""

from __future__ import annotations

import pytest
import torch

from stage1_encoders.pooling import UserSums, mean_by_user


def _rows(num_posts: int, num_users: int, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    # magnitudes spread over a few orders, so that a different order of the additions would show in the last bits
    rows = (
        torch.randn(num_posts, dim, generator=generator) * torch.rand(num_posts, 1, generator=generator) * 100
    )
    users = torch.randint(
        0, num_users - 2, (num_posts,), generator=generator
    )  # the last two users have no post
    return rows, users


@pytest.mark.parametrize("threads", [1, 2])
def test_sums_added_by_batches_equal_the_means_over_all_rows_bit_for_bit(threads):
    rows, users = _rows(5000, 300, 24)
    want, want_has = mean_by_user(rows, users, 300)
    generator = torch.Generator().manual_seed(1)
    cuts = sorted(torch.randint(0, 5000, (40,), generator=generator).tolist())  # uneven batches, some empty
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sums = UserSums(300, 24)
        for start, stop in zip([0, *cuts], [*cuts, 5000]):
            sums.add(rows[start:stop], users[start:stop])
    finally:
        torch.set_num_threads(before)
    got, has = sums.means()
    assert torch.equal(got, want) and torch.equal(has, want_has)
    assert torch.equal(sums.counts, torch.bincount(users, minlength=300))
    assert not has[-2:].any() and torch.all(got[-2:] == 0)
    # the order matters in the last bits: the rows added in reverse give other sums (so the test can fail)
    backwards = UserSums(300, 24)
    backwards.add(rows.flip(0), users.flip(0))
    assert not torch.equal(backwards.sums, sums.sums)
    torch.testing.assert_close(backwards.means()[0], want)


def test_rows_of_another_dtype_are_added_in_float32():
    rows, users = _rows(50, 10, 4)
    sums = UserSums(10, 4)
    sums.add(rows.to(torch.bfloat16), users.numpy())
    assert sums.sums.dtype == torch.float32
    torch.testing.assert_close(sums.means()[0], mean_by_user(rows.to(torch.bfloat16).float(), users, 10)[0])


def test_merged_shards_add_counts_exactly_and_sums_to_rounding():
    rows, users = _rows(2000, 100, 8)
    whole, first, second = UserSums(100, 8), UserSums(100, 8), UserSums(100, 8)
    whole.add(rows, users)
    first.add(rows[:700], users[:700])
    second.add(rows[700:], users[700:])
    merged = first.merged(second)
    assert torch.equal(merged.counts, whole.counts)
    torch.testing.assert_close(merged.sums, whole.sums, rtol=1e-6, atol=1e-4)
    assert torch.equal(
        first.counts, torch.bincount(users[:700], minlength=100)
    )  # the parts are left as they were
    with pytest.raises(ValueError, match=r"cannot merge user sums of shape \(100, 4\) into \(100, 8\)"):
        first.merged(UserSums(100, 4))
