"""MLM masking rules: 15% of maskable tokens, 80/10/10, special tokens and padding never touched."""

from __future__ import annotations

import torch

from stage1_encoders.masking import mask_tokens, maskable_positions

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = torch.tensor([PAD, CLS, SEP, MASK])
VOCAB = 50


def make_batch(rows: int, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, VOCAB, (rows, length), generator=gen)
    lengths = torch.randint(3, length + 1, (rows,), generator=gen)
    attention = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    ids[:, 0] = CLS
    ids[torch.arange(rows), lengths - 1] = SEP
    ids[~attention] = PAD
    return ids, attention.long()


def test_masking_statistics_on_a_large_sample():
    gen = torch.Generator().manual_seed(0)
    ids, attention = make_batch(4000, 40, gen)
    maskable = maskable_positions(ids, attention, SPECIAL)
    random_ids = torch.arange(4, VOCAB)
    corrupted, labels = mask_tokens(
        ids, maskable, mask_token_id=MASK, random_token_ids=random_ids, mlm_probability=0.15, generator=gen
    )
    selected = labels != -100
    n_maskable = int(maskable.sum())
    n_selected = int(selected.sum())
    assert abs(n_selected / n_maskable - 0.15) < 0.005
    assert torch.equal(labels[selected], ids[selected])
    as_mask = selected & (corrupted == MASK)
    kept = selected & (corrupted == ids)
    replaced = selected & (corrupted != MASK) & (corrupted != ids)
    assert abs(int(as_mask.sum()) / n_selected - 0.8) < 0.01
    # a random replacement can draw the original token (1 in 46 here), which then counts as "kept"
    p_same = 1 / len(random_ids)
    assert abs(int(kept.sum()) / n_selected - (0.1 + 0.1 * p_same)) < 0.01
    assert abs(int(replaced.sum()) / n_selected - 0.1 * (1 - p_same)) < 0.01
    assert torch.isin(corrupted[replaced], random_ids).all()
    assert torch.equal(corrupted[~selected], ids[~selected])


def test_special_tokens_and_padding_are_never_masked():
    gen = torch.Generator().manual_seed(1)
    ids, attention = make_batch(500, 12, gen)
    maskable = maskable_positions(ids, attention, SPECIAL)
    assert not maskable[ids == CLS].any() and not maskable[ids == SEP].any()
    assert not maskable[attention == 0].any()
    corrupted, labels = mask_tokens(
        ids,
        maskable,
        mask_token_id=MASK,
        random_token_ids=torch.arange(4, VOCAB),
        mlm_probability=0.9,
        generator=gen,
    )
    assert (labels[~maskable] == -100).all()
    assert torch.equal(corrupted[~maskable], ids[~maskable])
    assert (labels[maskable] != -100).float().mean() > 0.85


def test_masking_is_reproducible_with_a_generator():
    ids, attention = make_batch(20, 10, torch.Generator().manual_seed(2))
    maskable = maskable_positions(ids, attention, SPECIAL)
    kwargs = {"mask_token_id": MASK, "random_token_ids": torch.arange(4, VOCAB)}
    a = mask_tokens(ids, maskable, generator=torch.Generator().manual_seed(5), **kwargs)
    b = mask_tokens(ids, maskable, generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
