"""Each stage-1 loss (with its head) against a naive reference (loops / dense formulas) on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from stage1_encoders.heads import ITAHead, PairClassifier
from stage1_encoders.losses import GraphContrastiveLoss, ITALoss, MLMLoss, usable_pairs
from stage1_encoders.pooling import mean_by_user


def naive_smoothed_ce(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    total, count = 0.0, 0
    for row, label in zip(logits, labels):
        if int(label) == -100:
            continue
        log_p = row - torch.logsumexp(row, dim=0)
        total = total + (1 - eps) * -log_p[label] + eps * -log_p.mean()
        count += 1
    return total / count


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_mlm_loss_matches_label_smoothing_formula(eps):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen)
    labels = torch.randint(0, 11, (3, 5), generator=gen)
    labels[torch.rand(3, 5, generator=gen) < 0.5] = -100
    labels[0, 0] = 4  # at least one target
    got = MLMLoss(label_smoothing=eps)(logits, labels)["mlm_loss"]
    want = naive_smoothed_ce(logits.reshape(-1, 11), labels.reshape(-1), eps)
    torch.testing.assert_close(got, want)


def test_mlm_loss_ignores_unlabelled_positions():
    logits = torch.randn(4, 7)
    labels = torch.tensor([2, -100, -100, 5])
    changed = logits.clone()
    changed[1:3] += 100 * torch.randn(2, 7)  # unlabelled rows must not matter
    loss = MLMLoss(0.1)
    torch.testing.assert_close(loss(logits, labels)["mlm_loss"], loss(changed, labels)["mlm_loss"])


def naive_ita(image_z: torch.Tensor, text_z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    q = image_z.shape[0]
    i2t = t2i = 0.0
    for i in range(q):
        sims = torch.stack([scale * torch.dot(image_z[i], text_z[j]) for j in range(q)])
        i2t = i2t - (sims[i] - torch.logsumexp(sims, 0))
        sims = torch.stack([scale * torch.dot(image_z[j], text_z[i]) for j in range(q)])
        t2i = t2i - (sims[i] - torch.logsumexp(sims, 0))
    return (i2t + t2i) / (2 * q)


def _ita_inputs(q=6, di=5, dt=7):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(q, di, generator=gen), torch.randn(q, dt, generator=gen)


def ita(head: ITAHead, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return ITALoss()(*head(image, text))["ita_loss"]


def test_ita_loss_matches_loop_reference():
    image, text = _ita_inputs()
    head = ITAHead(5, 7, embed_dim=4, init_temperature=0.1)
    got = ita(head, image, text)
    image_z = torch.nn.functional.normalize(head.image_proj(image), dim=-1)
    text_z = torch.nn.functional.normalize(head.text_proj(text), dim=-1)
    want = naive_ita(image_z, text_z, torch.tensor(10.0))
    torch.testing.assert_close(got, want)


def test_ita_temperature_gradient_matches_reference_and_finite_difference():
    image, text = _ita_inputs()
    head = ITAHead(5, 7, embed_dim=4, init_temperature=0.2)
    ita(head, image, text).backward()
    got = head.logit_scale.grad.clone()

    with torch.no_grad():
        image_z = torch.nn.functional.normalize(head.image_proj(image), dim=-1)
        text_z = torch.nn.functional.normalize(head.text_proj(text), dim=-1)
    tau = head.logit_scale.detach().clone().requires_grad_(True)
    naive_ita(image_z, text_z, tau.exp()).backward()
    torch.testing.assert_close(got, tau.grad)

    h = 1e-3
    with torch.no_grad():
        base = head.logit_scale.item()
        head.logit_scale.fill_(base + h)
        up = ita(head, image, text).item()
        head.logit_scale.fill_(base - h)
        down = ita(head, image, text).item()
    assert got.item() == pytest.approx((up - down) / (2 * h), rel=1e-2, abs=1e-4)
    assert got.item() != 0.0


def test_ita_logit_scale_starts_at_inverse_temperature_and_is_clamped():
    head = ITAHead(3, 3, init_temperature=0.07, max_logit_scale=100.0)
    assert head.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        head.logit_scale.fill_(10.0)
    head.clamp_logit_scale()
    assert head.logit_scale.item() == pytest.approx(math.log(100.0))
    with torch.no_grad():
        head.logit_scale.fill_(-3.0)
    head.clamp_logit_scale()
    assert head.logit_scale.item() == 0.0


def test_ita_gradient_reaches_both_projections_and_inputs():
    image, text = _ita_inputs()
    image.requires_grad_(True)
    text.requires_grad_(True)
    head = ITAHead(5, 7, embed_dim=4)
    ita(head, image, text).backward()
    for tensor in (image, text, head.image_proj.weight, head.text_proj.weight):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_losses_own_no_parameters():
    for loss in (MLMLoss(), ITALoss(), GraphContrastiveLoss("text")):
        assert list(loss.parameters()) == [] and list(loss.buffers()) == []


def gcl(head, name, user_emb, user_mask, pair_u, pair_v, label, weight=None):
    """What ``Stage1System`` does for one modality: the usable pairs, the head's logits, the loss."""
    usable = usable_pairs(user_mask, pair_u, pair_v)
    if not bool(usable.any()):
        return {}
    logits = head(user_emb, pair_u[usable], pair_v[usable])
    return GraphContrastiveLoss(name)(logits, label[usable], None if weight is None else weight[usable])


def naive_gcl(head, user_emb, user_mask, pair_u, pair_v, label, weight):
    terms = []
    for u, v, y, w in zip(pair_u.tolist(), pair_v.tolist(), label.tolist(), weight.tolist()):
        if not (user_mask[u] and user_mask[v]):
            continue
        x = torch.cat([user_emb[u], user_emb[v]])
        lin1, _, lin2 = head.mlp
        hidden = torch.clamp(lin1.weight @ x + lin1.bias, min=0)
        p = torch.sigmoid(lin2.weight @ hidden + lin2.bias)[0]
        terms.append(-w * (y * torch.log(p) + (1 - y) * torch.log(1 - p)))
    return torch.stack(terms).mean()


def test_gcl_matches_loop_reference_with_weights_and_missing_users():
    gen = torch.Generator().manual_seed(2)
    user_emb = torch.randn(6, 4, generator=gen)
    user_mask = torch.tensor([True, True, False, True, True, True])
    pair_u = torch.tensor([0, 1, 2, 3, 4, 5, 0])
    pair_v = torch.tensor([1, 3, 0, 5, 0, 2, 4])
    label = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    weight = torch.tensor([0.5, 2.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    head = PairClassifier(4, hidden_dim=3)
    got = gcl(head, "text", user_emb, user_mask, pair_u, pair_v, label, weight)
    assert set(got) == {"gcl_text_loss"}
    torch.testing.assert_close(
        got["gcl_text_loss"], naive_gcl(head, user_emb, user_mask, pair_u, pair_v, label, weight)
    )
    unweighted = gcl(head, "text", user_emb, user_mask, pair_u, pair_v, label)["gcl_text_loss"]
    torch.testing.assert_close(
        unweighted, naive_gcl(head, user_emb, user_mask, pair_u, pair_v, label, torch.ones(7))
    )


def test_gcl_weight_scales_positive_gradient():
    user_emb = torch.randn(2, 3)
    head = PairClassifier(3, hidden_dim=4)
    args = (user_emb, torch.tensor([True, True]), torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0]))
    gcl(head, "image", *args, torch.tensor([1.0]))["gcl_image_loss"].backward()
    grad_one = head.mlp[2].weight.grad.clone()
    head.zero_grad()
    gcl(head, "image", *args, torch.tensor([3.0]))["gcl_image_loss"].backward()
    torch.testing.assert_close(head.mlp[2].weight.grad, 3 * grad_one)


def test_usable_pairs_need_both_users():
    mask = torch.tensor([True, False, True])
    got = usable_pairs(mask, torch.tensor([0, 0, 1, 2]), torch.tensor([2, 1, 2, 0]))
    assert got.tolist() == [True, False, False, True]


def test_mean_by_user_matches_loop():
    gen = torch.Generator().manual_seed(3)
    post_emb = torch.randn(9, 4, generator=gen)
    post_user = torch.tensor([0, 0, 2, 2, 2, 4, 4, 0, 2])
    user_emb, has_posts = mean_by_user(post_emb, post_user, 6)
    for user in range(6):
        rows = post_emb[post_user == user]
        if len(rows):
            torch.testing.assert_close(user_emb[user], rows.mean(0))
            assert has_posts[user]
        else:
            assert not has_posts[user] and torch.all(user_emb[user] == 0)


def test_cosine_gcl_matches_a_loop_and_pulls_linked_users_together():
    gen = torch.Generator().manual_seed(3)
    user_emb = torch.randn(5, 4, generator=gen, requires_grad=True)
    mask = torch.tensor([True, True, True, False, True])
    pair_u, pair_v = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([1, 2, 4, 0, 0])
    label = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    head = PairClassifier(4, form="cosine")
    with torch.no_grad():
        head.log_scale.fill_(math.log(3.0))
        head.bias.fill_(-0.5)
    got = gcl(head, "image", user_emb, mask, pair_u, pair_v, label)["gcl_image_loss"]
    terms = []
    for u, v, y in zip(pair_u.tolist(), pair_v.tolist(), label.tolist()):
        if not (mask[u] and mask[v]):
            continue
        cos = float(user_emb[u] @ user_emb[v] / (user_emb[u].norm() * user_emb[v].norm()))
        p = 1 / (1 + math.exp(-(3.0 * cos - 0.5)))
        terms.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    assert float(got) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    # one gradient step on the embeddings raises the cosine of a linked pair and lowers that of a negative pair
    got.backward()
    stepped = (user_emb - 0.5 * user_emb.grad).detach()

    def cos(e, u, v):
        return float(torch.nn.functional.cosine_similarity(e[u], e[v], dim=0))

    assert cos(stepped, 0, 1) > cos(user_emb.detach(), 0, 1)
    assert cos(stepped, 1, 2) < cos(user_emb.detach(), 1, 2)
    with pytest.raises(ValueError, match="'mlp' or 'cosine'"):
        PairClassifier(4, form="dot")
