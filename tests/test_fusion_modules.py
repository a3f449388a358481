"""mmcore.fusion: concat / mean / select fusion, the projection head, late fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcore.fusion import (
    FUSIONS,
    ConcatFusion,
    LateFusionClassifier,
    MeanFusion,
    ProjectionHead,
    SelectFusion,
)
from mmcore.fusion.late_fusion import WEIGHT_GRID


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"text": torch.randn(3, 4), "image": torch.randn(3, 4), "audio": torch.randn(3, 4)}


def test_fusions_registry():
    assert FUSIONS == {"concat": ConcatFusion, "mean": MeanFusion}


def test_concat_fusion_sorted_order_and_shape(inputs):
    fusion = ConcatFusion(["text", "image", "audio"], dim=4)
    assert fusion.modalities == ["audio", "image", "text"]
    assert fusion.out_dim == 12
    out = fusion(inputs)
    assert out.shape == (3, 12)
    torch.testing.assert_close(out[:, 0:4], inputs["audio"])
    torch.testing.assert_close(out[:, 4:8], inputs["image"])
    torch.testing.assert_close(out[:, 8:12], inputs["text"])
    # the layout does not depend on the order the modalities were declared or passed in
    other = ConcatFusion(["image", "audio", "text"], dim=4)
    torch.testing.assert_close(other(dict(reversed(list(inputs.items())))), out)


def test_concat_fusion_exact_values():
    fusion = ConcatFusion(["b", "a"], dim=2)
    out = fusion({"b": torch.tensor([[3.0, 4.0]]), "a": torch.tensor([[1.0, 2.0]])})
    assert out.tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_mean_fusion(inputs):
    fusion = MeanFusion(["text", "image"], dim=4)
    assert fusion.modalities == ["image", "text"]
    assert fusion.out_dim == 4
    out = fusion(inputs)  # the extra "audio" input is ignored
    assert out.shape == (3, 4)
    torch.testing.assert_close(out, (inputs["image"] + inputs["text"]) / 2)
    exact = fusion({"image": torch.tensor([[1.0, 2.0]]), "text": torch.tensor([[3.0, 6.0]])})
    assert exact.tolist() == [[2.0, 4.0]]


def test_select_fusion(inputs):
    fusion = SelectFusion("text", dim=4)
    assert fusion.modalities == ["text"]
    assert fusion.out_dim == 4
    assert fusion(inputs) is inputs["text"]


def test_projection_head_shape_and_pinned():
    torch.manual_seed(0)
    head = ProjectionHead(5, 3)
    x = torch.randn(4, 5)
    out = head(x)
    assert out.shape == (4, 3)
    assert out.sum().item() == pytest.approx(-0.9421, abs=1e-3)
    assert head.net[0].out_features == 5  # hidden defaults to max(d_in, d_shared)
    assert ProjectionHead(2, 7).net[0].out_features == 7
    assert ProjectionHead(2, 7, hidden=11).net[0].out_features == 11


def _late() -> LateFusionClassifier:
    torch.manual_seed(0)
    return LateFusionClassifier(["text", "image"], dim=4, n_classes=3, hidden=6).eval()


def test_late_fusion_forward_is_weighted_sum_of_log_softmax(inputs):
    model = _late()
    assert model.modalities == ["image", "text"]
    x = {"image": inputs["image"], "text": inputs["text"]}
    out = model(x)
    assert out.shape == (3, 3)
    per = model.per_modality(x)
    assert per.shape == (2, 3, 3)
    expected = F.log_softmax(model.head(x["image"]), 1) + F.log_softmax(model.head(x["text"]), 1)
    torch.testing.assert_close(out, expected)
    model.weights.copy_(torch.tensor([1.0, 0.25]))
    expected = (F.log_softmax(model.head(x["image"]), 1)
                + 0.25 * F.log_softmax(model.head(x["text"]), 1))
    torch.testing.assert_close(model(x), expected)
    # weights are a buffer: saved with the model, not trained
    assert "weights" in model.state_dict()
    assert all(p is not model.weights for p in model.parameters())


def test_late_fusion_loss_returns_loss_and_fused():
    torch.manual_seed(0)
    model = LateFusionClassifier(["text", "image"], dim=4, n_classes=3, hidden=6).eval()
    x = {"image": torch.randn(5, 4), "text": torch.randn(5, 4)}
    labels = torch.tensor([0, 1, 2, 0, 1])
    assert model(x).sum().item() == pytest.approx(-33.9066, abs=1e-3)
    loss, fused = model.loss(x, labels)
    assert loss.shape == ()
    assert fused.shape == (5, 3)
    torch.testing.assert_close(fused, model(x))
    expected = (F.cross_entropy(model.head(x["image"]), labels)
                + F.cross_entropy(model.head(x["text"]), labels))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert loss.item() == pytest.approx(2.3295, abs=1e-3)


def _identity_late(n_classes: int = 4) -> LateFusionClassifier:
    """A late-fusion model whose head is ReLU(x): embeddings are the logits."""
    model = LateFusionClassifier(["image", "text"], dim=n_classes, n_classes=n_classes,
                                 hidden=n_classes)
    with torch.no_grad():
        for layer in (model.head[0], model.head[3]):
            layer.weight.copy_(torch.eye(n_classes))
            layer.bias.zero_()
    return model.eval()


def test_calibrate_gives_useless_text_weight_zero():
    torch.manual_seed(0)
    n = 40
    labels = torch.arange(n) % 4
    wrong = (labels + torch.randint(1, 4, (n,))) % 4  # text confidently names another class
    x = {"image": 3.0 * F.one_hot(labels, 4).float(), "text": 5.0 * F.one_hot(wrong, 4).float()}
    model = _identity_late()
    weights = model.calibrate(x, labels)
    assert weights == {"image": 1.0, "text": 0.0}
    assert model.weights.tolist() == [1.0, 0.0]
    assert (model(x).argmax(1) == labels).all()


def test_calibrate_gives_useful_text_full_weight():
    n = 40
    labels = torch.arange(n) % 4
    # the image says nothing (uniform), the text is right: accuracy ties for every weight > 0,
    # and the lowest NLL breaks the tie at the largest weight
    x = {"image": torch.zeros(n, 4), "text": 3.0 * F.one_hot(labels, 4).float()}
    model = _identity_late()
    weights = model.calibrate(x, labels)
    assert weights == {"image": 1.0, "text": max(WEIGHT_GRID)}
    assert model.weights.tolist() == [1.0, 1.0]


def test_calibrate_single_modality_keeps_weight_one():
    torch.manual_seed(0)
    model = LateFusionClassifier(["image"], dim=4, n_classes=3, hidden=5).eval()
    weights = model.calibrate({"image": torch.randn(6, 4)}, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert weights == {"image": 1.0}
