"""mmcore.losses: L2 alignment, symmetric InfoNCE (functions and modules), soft distillation."""

from __future__ import annotations

import math

import pytest
import torch

from mmcore.losses import InfoNCELoss, L2AlignmentLoss, info_nce_loss, l2_alignment_loss


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(4, 3), torch.randn(4, 3)


def test_l2_hand_computed():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # ||(1,2)||^2 = 5, ||(-3,-4)||^2 = 25
    assert l2_alignment_loss(a, b, reduction="sum").item() == pytest.approx(30.0)
    assert l2_alignment_loss(a, b).item() == pytest.approx(15.0)
    assert L2AlignmentLoss("sum")(a, b).item() == pytest.approx(30.0)
    assert L2AlignmentLoss()(a, b).item() == pytest.approx(15.0)


def test_l2_zero_for_identical_and_symmetric(pair):
    a, b = pair
    assert l2_alignment_loss(a, a).item() == 0.0
    assert l2_alignment_loss(a, b).item() == pytest.approx(l2_alignment_loss(b, a).item())


def test_l2_pinned(pair):
    a, b = pair
    loss = l2_alignment_loss(a, b)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(6.7676, abs=1e-3)
    assert l2_alignment_loss(a, b, reduction="sum").item() == pytest.approx(27.0705, abs=1e-3)
    assert L2AlignmentLoss()(a, b).item() == pytest.approx(loss.item())


def test_l2_gradient(pair):
    a, b = pair
    a = a.clone().requires_grad_(True)
    l2_alignment_loss(a, b).backward()
    torch.testing.assert_close(a.grad, 2 * (a.detach() - b) / len(a))


def test_info_nce_aligned_one_hot_pairs_at_low_temperature_is_zero():
    x = torch.eye(4)
    assert info_nce_loss(x, x.clone(), temperature=0.01).item() == pytest.approx(0.0, abs=1e-6)
    # scale does not matter: embeddings are normalised first
    assert info_nce_loss(3 * x, 0.5 * x, temperature=0.01).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("batch", [2, 4, 7])
def test_info_nce_identical_rows_is_log_batch(batch):
    x = torch.ones(batch, 5)
    assert info_nce_loss(x, x).item() == pytest.approx(math.log(batch), abs=1e-5)


def test_info_nce_hand_computed_two_pairs():
    x = torch.eye(2)
    # logits = I at temperature 1: each row's CE is -1 + log(e + 1) = log(1 + 1/e)
    expected = math.log(1 + math.exp(-1))
    assert info_nce_loss(x, x, temperature=1.0).item() == pytest.approx(expected, abs=1e-6)
    assert InfoNCELoss(temperature=1.0)(x, x).item() == pytest.approx(expected, abs=1e-6)


def test_info_nce_symmetric_and_pinned(pair):
    a, b = pair
    loss = info_nce_loss(a, b)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(info_nce_loss(b, a).item(), abs=1e-6)
    assert loss.item() == pytest.approx(9.3379, abs=1e-3)
    assert info_nce_loss(a, b, temperature=0.5).item() == pytest.approx(2.4513, abs=1e-3)
    assert InfoNCELoss(temperature=1.0)(a, b).item() == pytest.approx(1.8131, abs=1e-3)
    assert InfoNCELoss()(a, b).item() == pytest.approx(loss.item())


def test_info_nce_prefers_aligned_pairs(pair):
    a, _ = pair
    shuffled = a[torch.tensor([1, 2, 3, 0])]
    assert info_nce_loss(a, a) < info_nce_loss(a, shuffled)


def test_info_nce_is_differentiable(pair):
    a, b = pair
    a = a.clone().requires_grad_(True)
    InfoNCELoss()(a, b).backward()
    assert a.grad.shape == (4, 3)
    assert torch.isfinite(a.grad).all()


def test_soft_distillation_prefers_the_teachers_class_and_discounts_unsure_pairs():
    from mmcore.losses import soft_distillation_loss

    teacher = torch.tensor([[4.0, 0.0, 0.0]])
    agree, disagree = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 4.0, 0.0]])
    assert soft_distillation_loss(agree, teacher, 2.0) < soft_distillation_loss(
        disagree, teacher, 2.0)
    # the same wrong student, against a sure and an unsure (flat) teacher: the unsure pair
    # weighs 1/3 (its top probability), the sure one ~0.96
    flat = torch.zeros(1, 3)
    sure = soft_distillation_loss(disagree, teacher, 1.0)
    unsure = soft_distillation_loss(disagree, flat, 1.0)
    per_pair_unsure = -torch.log_softmax(disagree, 1).mean()
    assert unsure.item() == pytest.approx(per_pair_unsure.item() / 3, rel=1e-5)
    assert soft_distillation_loss(torch.cat([agree, disagree]), torch.cat([teacher, flat]), 2.0,
                                  reduction="sum").item() == pytest.approx(
        (soft_distillation_loss(agree, teacher, 2.0) + soft_distillation_loss(
            disagree, flat, 2.0)).item(), rel=1e-5)
    assert sure > unsure
