"""mmcore.fusion: the registry, every operator (shape, key order, missing modality, learns a task
that needs both modalities), select fusion, the projection head, late fusion's calibration."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mmcore.config import FUSION_NAMES, ConfigError, TrainingConfig, load_config
from mmcore.fusion import FusionOperator, ProjectionHead, SelectFusion
from mmcore.fusion.attention_fusion import AttentionFusion
from mmcore.fusion.concat_fusion import ConcatFusion
from mmcore.fusion.fusion_classifier import FusionClassifier, build_classifier
from mmcore.fusion.gated_multimodal_unit import GatedMultimodalUnit
from mmcore.fusion.late_fusion import WEIGHT_GRID, LateFusion
from mmcore.fusion.mean_fusion import MeanFusion
from mmcore.fusion.operators import FUSIONS, fusion_class

NAMES = list(FUSIONS)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: more threads only contend with other processes on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"text": torch.randn(3, 4), "image": torch.randn(3, 4), "audio": torch.randn(3, 4)}


def seeded(name: str, modalities: list[str], dim: int = 4, seed: int = 0) -> FusionOperator:
    torch.manual_seed(seed)
    return fusion_class(name)(modalities, dim).eval()


# --- the registry and the config field ---------------------------------------------------------

def test_registry_lists_every_operator_once_each_in_a_file_named_after_it():
    assert NAMES == ["late", "concat", "sum", "mean", "gmu", "tensor", "lmf", "attention"]
    for name in NAMES:
        cls = fusion_class(name)
        assert issubclass(cls, FusionOperator)
        file = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        assert cls.__module__ == f"mmcore.fusion.{file}"
    assert [n for n in NAMES if fusion_class(n).fuses_predictions] == ["late"]
    with pytest.raises(ValueError, match="unknown fusion operator 'nope'; choose one of late, "):
        fusion_class("nope")


def test_config_accepts_exactly_the_registry_names():
    assert FUSION_NAMES == tuple(FUSIONS)
    for name in NAMES:
        assert load_config(overrides=[f"training.fusion={name}"]).training.fusion == name
    assert load_config().training.fusion == "late"
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["training.fusion=product"])
    message = str(err.value)
    assert message.startswith("invalid config: training.fusion: Input should be 'late'")
    assert all(f"'{name}'" in message for name in NAMES)


def test_config_does_not_import_torch():
    """The CLI validates a config before it imports torch (or the fusion operators)."""
    code = ("import sys; import mmcore.config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_operators_count_in_the_training_fingerprint_not_in_preprocessing():
    """Why the config lists the names instead of importing the registry: editing an operator
    must re-run training, not preprocessing."""
    from tasks.engine.fingerprint import module_digests

    operators = {FUSIONS[name].partition(":")[0] for name in NAMES}
    assert operators <= set(module_digests("tasks.stages.training"))
    assert not operators & set(module_digests("tasks.stages.preprocessing"))


# --- every operator: shape, key order, missing modality -----------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("modalities", [["text", "image"], ["text", "image", "audio"]])
def test_shape_and_sorted_key_stability(name, modalities, inputs):
    op = seeded(name, modalities)
    assert op.modalities == sorted(modalities)
    x = {m: inputs[m] for m in modalities}
    out = op(x)
    assert out.shape == (3, op.out_dim)
    assert torch.isfinite(out).all()
    # the same output for the dict in any key order, extra keys ignored, and for the operator
    # declared with its modalities in another order (same seed: same parameters)
    torch.testing.assert_close(op(dict(reversed(list(x.items())))), out)
    torch.testing.assert_close(op({"extra": torch.randn(3, 4), **x}), out)
    torch.testing.assert_close(seeded(name, list(reversed(modalities)))(x), out)


def test_out_dims():
    two = ["image", "text"]
    dims = {name: seeded(name, two, dim=6).out_dim for name in NAMES}
    assert dims == {"late": 6, "concat": 12, "sum": 6, "mean": 6, "gmu": 6, "tensor": 49,
                    "lmf": 6, "attention": 6}
    assert seeded("tensor", ["a", "b", "c"], dim=2).out_dim == 27
    assert fusion_class("lmf")(two, 6, rank=2, out_dim=5).out_dim == 5


@pytest.mark.parametrize("name", NAMES)
def test_missing_modality_gives_a_finite_output_and_all_missing_is_an_error(name, inputs):
    op = seeded(name, ["text", "image"])
    for kept in ("image", "text"):
        out = op({kept: inputs[kept]})
        assert out.shape == (3, op.out_dim)
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"none of the modalities \['image', 'text'\]"):
        op({"audio": inputs["audio"]})


def _zeros_for_text(inputs):
    return {"image": inputs["image"], "text": torch.zeros(3, 4)}


@pytest.mark.parametrize("name", ["concat", "sum", "tensor", "lmf"])
def test_missing_modality_counts_as_zeros(name, inputs):
    """concat, sum, tensor and low-rank fusion read a missing modality as a zero vector."""
    op = seeded(name, ["text", "image"])
    missing = op({"image": inputs["image"]})
    torch.testing.assert_close(missing, op(_zeros_for_text(inputs)))
    assert not torch.allclose(missing, op({"image": inputs["image"], "text": inputs["text"]}))


def test_missing_modality_concat_slot_and_mean_of_present(inputs):
    out = ConcatFusion(["text", "image"], dim=4)({"text": inputs["text"]})
    assert out[:, :4].eq(0).all()
    torch.testing.assert_close(out[:, 4:], inputs["text"])
    mean = MeanFusion(["text", "image", "audio"], dim=4)
    torch.testing.assert_close(mean({"image": inputs["image"], "text": inputs["text"]}),
                               (inputs["image"] + inputs["text"]) / 2)
    torch.testing.assert_close(mean({"image": inputs["image"]}), inputs["image"])


def test_missing_modality_gmu_masks_the_gate(inputs):
    op = seeded("gmu", ["text", "image"])
    assert isinstance(op, GatedMultimodalUnit)
    # the image's gate is 1: the output is its own transform, whatever the text would have been
    expected = torch.tanh(op.transforms["image"](inputs["image"]))
    torch.testing.assert_close(op({"image": inputs["image"]}), expected)


def test_missing_modality_attention_masks_the_token(inputs):
    op = seeded("attention", ["text", "image"])
    assert isinstance(op, AttentionFusion)
    # one token attends only to itself: out_proj(v_proj(token)), residual, LayerNorm
    token = inputs["image"] + op.modality_embedding[0]
    w_v, b_v = op.attention.in_proj_weight[8:], op.attention.in_proj_bias[8:]
    attended = op.attention.out_proj(F.linear(token, w_v, b_v))
    torch.testing.assert_close(op({"image": inputs["image"]}), op.norm(token + attended))


def test_gmu_with_two_modalities_is_the_papers_sigmoid_gate(inputs):
    op = seeded("gmu", ["text", "image"])
    x = {"image": inputs["image"], "text": inputs["text"]}
    logits = op.gate(torch.cat([x["image"], x["text"]], dim=1)).view(3, 2, 4)
    z = torch.sigmoid(logits[:, 0] - logits[:, 1])
    h_image = torch.tanh(op.transforms["image"](x["image"]))
    h_text = torch.tanh(op.transforms["text"](x["text"]))
    torch.testing.assert_close(op(x), z * h_image + (1 - z) * h_text)


def test_tensor_fusion_is_the_outer_product_of_vectors_with_one():
    op = fusion_class("tensor")(["b", "a"], 2)
    out = op({"a": torch.tensor([[2.0, 3.0]]), "b": torch.tensor([[5.0, 7.0]])})
    # [2, 3, 1] x [5, 7, 1], row-major: a's features times b's, then a's alone, then b's alone
    assert out.tolist() == [[10.0, 14.0, 2.0, 15.0, 21.0, 3.0, 5.0, 7.0, 1.0]]


def test_low_rank_fusion_equals_a_linear_layer_on_the_tensor(inputs):
    """LMF computes W . (tensor fusion) for the rank-r weight its factors make, without the
    tensor (Liu et al. 2018, eq. 6)."""
    op = fusion_class("lmf")(["text", "image"], 4, rank=3, out_dim=5)
    x = {"image": inputs["image"], "text": inputs["text"]}
    weight = torch.einsum("r,rio,rjo->oij", op.rank_weights, op.factors["image"],
                          op.factors["text"]).flatten(1)  # (out, (d+1)^2)
    tensor = fusion_class("tensor")(["text", "image"], 4)(x)
    torch.testing.assert_close(op(x), tensor @ weight.T + op.bias)


# --- every operator in the classifier: learns a task that needs both modalities -----------------

def bits_task(n: int, dim: int = 8, *, xor: bool = False, signal: float = 3.0, seed: int = 0):
    """Two random bits, one per modality: each modality's embedding is +-`signal` along its own
    random direction plus unit noise (one bit is readable at ~99.9%). The label is both bits
    (4 classes) or their XOR (2 classes); one modality alone can do no better than 0.5."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, 2), generator=g)
    directions = F.normalize(torch.randn(2, dim, generator=g), dim=1)
    x = {m: signal * (2 * bits[:, i:i + 1] - 1).float() * directions[i]
         + torch.randn(n, dim, generator=g) for i, m in enumerate(("image", "text"))}
    labels = bits[:, 0] ^ bits[:, 1] if xor else 2 * bits[:, 0] + bits[:, 1]
    return x, labels


def split(x, labels, rows):
    return {m: v[rows] for m, v in x.items()}, labels[rows]


def train_and_test(cfg: TrainingConfig, modalities: list[str], *, xor: bool = False) -> float:
    """Full-batch Adam on 600 rows, weights calibrated on 200, accuracy on 400 held out."""
    x, labels = bits_task(1200, xor=xor)
    n_classes = 2 if xor else 4
    torch.manual_seed(0)
    model = build_classifier(cfg, modalities, 8, n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_x, train_y = split(x, labels, slice(0, 600))
    for _ in range(150):
        loss, _ = model.loss(train_x, train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.calibrate(*split(x, labels, slice(600, 800)))
    test_x, test_y = split(x, labels, slice(800, 1200))
    with torch.no_grad():
        return (model(test_x).argmax(1) == test_y).float().mean().item()


@pytest.fixture(scope="module")
def one_modality_accuracy() -> dict[str, float]:
    """The best a classifier on one modality alone reaches, on both tasks."""
    return {task: max(train_and_test(TrainingConfig(mode="unimodal", modality=m, hidden=32),
                                     ["image", "text"], xor=task == "xor")
                      for m in ("image", "text"))
            for task in ("both_bits", "xor")}


def test_one_modality_alone_cannot_do_the_tasks(one_modality_accuracy):
    assert one_modality_accuracy["both_bits"] < 0.6
    assert one_modality_accuracy["xor"] < 0.6


@pytest.mark.parametrize("name", NAMES)
def test_operator_learns_a_task_that_needs_both_modalities(name, one_modality_accuracy):
    accuracy = train_and_test(TrainingConfig(fusion=name, hidden=32), ["image", "text"])
    assert accuracy > 0.9
    assert accuracy > one_modality_accuracy["both_bits"] + 0.3


@pytest.mark.parametrize("name", [n for n in NAMES if n != "late"])
def test_feature_level_operator_learns_xor(name, one_modality_accuracy):
    accuracy = train_and_test(TrainingConfig(fusion=name, hidden=32), ["image", "text"], xor=True)
    assert accuracy > 0.9
    assert accuracy > one_modality_accuracy["xor"] + 0.3


def test_late_fusion_cannot_learn_xor():
    """A product of experts multiplies p(y | image) and p(y | text), each at chance for an XOR:
    the reason the zoo has feature-level operators."""
    accuracy = train_and_test(TrainingConfig(fusion="late", hidden=32), ["image", "text"],
                              xor=True)
    assert accuracy < 0.65


@pytest.mark.parametrize("name", NAMES)
def test_classifier_rebuilds_from_config_and_runs_with_a_modality_missing(name, inputs):
    cfg = TrainingConfig(fusion=name, hidden=6)
    torch.manual_seed(0)
    model = build_classifier(cfg, ["text", "image"], 4, 3).eval()
    assert isinstance(model, FusionClassifier)
    assert model.calibrate({"image": inputs["image"], "text": inputs["text"]},
                           torch.tensor([0, 1, 2])) is not None
    torch.manual_seed(1)  # other initial weights, replaced by the saved state
    rebuilt = build_classifier(cfg, ["image", "text"], 4, 3).eval()
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(inputs), model(inputs))
    out = rebuilt({"text": inputs["text"]})
    assert out.shape == (3, 3)
    assert torch.isfinite(out).all()


# --- select fusion, the projection head ----------------------------------------------------------

def test_select_fusion(inputs):
    fusion = SelectFusion("text", dim=4)
    assert fusion.modalities == ["text"]
    assert fusion.out_dim == 4
    assert fusion(inputs) is inputs["text"]
    with pytest.raises(ValueError, match=r"none of the modalities \['text'\]"):
        fusion({"image": inputs["image"]})


def test_unimodal_and_cross_modal_classifiers_select_one_modality():
    for cfg in (TrainingConfig(mode="unimodal", modality="text", fusion="tensor"),
                TrainingConfig(mode="cross_modal", modality="text")):
        model = build_classifier(cfg, ["text"], 4, 3)
        assert isinstance(model.fusion, SelectFusion)
        assert model.fusion.modalities == ["text"]
    one = build_classifier(TrainingConfig(fusion="gmu"), ["image"], 4, 3)
    assert isinstance(one.fusion, SelectFusion)  # multimodal on one-modality data


def test_concat_fusion_exact_values():
    fusion = ConcatFusion(["b", "a"], dim=2)
    out = fusion({"b": torch.tensor([[3.0, 4.0]]), "a": torch.tensor([[1.0, 2.0]])})
    assert out.tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_sum_and_mean_exact_values():
    x = {"image": torch.tensor([[1.0, 2.0]]), "text": torch.tensor([[3.0, 6.0]])}
    assert fusion_class("sum")(["text", "image"], 2)(x).tolist() == [[4.0, 8.0]]
    assert fusion_class("mean")(["text", "image"], 2)(x).tolist() == [[2.0, 4.0]]


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


# --- late fusion (the default): product of experts, weights fitted on val ------------------------

def _late(dim: int = 4, n_classes: int = 3, hidden: int = 6) -> FusionClassifier:
    """Late fusion's own arithmetic: without the confidence gates, which scale each expert
    (tests/test_graceful_fusion.py)."""
    torch.manual_seed(0)
    cfg = TrainingConfig(fusion="late", hidden=hidden, confidence_gates=False)
    return build_classifier(cfg, ["text", "image"], dim, n_classes).eval()


def test_late_fusion_forward_is_weighted_sum_of_log_softmax(inputs):
    model = _late()
    assert isinstance(model.fusion, LateFusion)
    assert model.fusion.modalities == ["image", "text"]
    x = {"image": inputs["image"], "text": inputs["text"]}
    out = model(x)
    assert out.shape == (3, 3)
    expected = F.log_softmax(model.head(x["image"]), 1) + F.log_softmax(model.head(x["text"]), 1)
    torch.testing.assert_close(out, expected)
    model.fusion.weights.copy_(torch.tensor([1.0, 0.25]))
    expected = (F.log_softmax(model.head(x["image"]), 1)
                + 0.25 * F.log_softmax(model.head(x["text"]), 1))
    torch.testing.assert_close(model(x), expected)
    # weights are a buffer: saved with the model, not trained
    assert "fusion.weights" in model.state_dict()
    assert all(p is not model.fusion.weights for p in model.parameters())


def test_late_fusion_missing_modality_drops_its_expert(inputs):
    model = _late()
    model.fusion.weights.copy_(torch.tensor([1.0, 0.25]))
    text_alone = 0.25 * F.log_softmax(model.head(inputs["text"]), 1)
    torch.testing.assert_close(model({"text": inputs["text"]}), text_alone)
    # a text weight of 0 (fitted beside a better image) does not silence the text left alone
    model.fusion.weights.copy_(torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(model({"text": inputs["text"]}),
                               F.log_softmax(model.head(inputs["text"]), 1))
    with pytest.raises(ValueError, match=r"needs every modality; missing \['text'\]"):
        model.calibrate({"image": inputs["image"]}, torch.tensor([0, 1, 2]))


def test_late_fusion_loss_returns_loss_and_fused():
    model = _late()  # the numbers pinned before late fusion joined the registry
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


def _identity_late(n_classes: int = 4) -> FusionClassifier:
    """A late-fusion model whose head is ReLU(x): embeddings are the logits."""
    model = _late(dim=n_classes, n_classes=n_classes, hidden=n_classes)
    with torch.no_grad():
        for layer in (model.head[0], model.head[3]):
            layer.weight.copy_(torch.eye(n_classes))
            layer.bias.zero_()
    return model


def test_calibrate_gives_useless_text_weight_zero():
    torch.manual_seed(0)
    n = 40
    labels = torch.arange(n) % 4
    wrong = (labels + torch.randint(1, 4, (n,))) % 4  # text confidently names another class
    x = {"image": 3.0 * F.one_hot(labels, 4).float(), "text": 5.0 * F.one_hot(wrong, 4).float()}
    model = _identity_late()
    weights = model.calibrate(x, labels)
    assert weights == {"image": 1.0, "text": 0.0}
    assert model.fusion.weights.tolist() == [1.0, 0.0]
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
    assert model.fusion.weights.tolist() == [1.0, 1.0]


def test_calibrate_single_modality_keeps_weight_one():
    torch.manual_seed(0)
    fusion = LateFusion(["image"], dim=3)
    weights = fusion.calibrate({"image": torch.randn(6, 3)}, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert weights == {"image": 1.0}


def test_feature_level_operators_fit_nothing_on_val(inputs):
    model = build_classifier(TrainingConfig(fusion="concat"), ["image", "text"], 4, 3)
    assert model.calibrate(inputs, torch.tensor([0, 1, 2])) == {}
