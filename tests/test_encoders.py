"""mmcore.encoders: the CNN image encoder and the bidirectional GRU text encoder."""

from __future__ import annotations

import pytest
import torch

from mmcore.encoders import ImageCNN, TextGRU
from mmcore.encoders.image_cnn import random_shift


def _reinit(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights drawn here, so pinned outputs depend on the architecture only (not on what the
    constructor did with the global generator or the BatchNorm buffers)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape) * 0.2)  # drawn in logical order: any layout
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
    return model


@pytest.mark.parametrize("shape, convs, blocks, feature_shape, pinned_sum", [
    ((1, 8, 8), 2, 1, (4, 4, 4), 2.9725),  # one halving: 8 -> 4
    ((1, 28, 28), 2, 2, (8, 7, 7), 2.4695),  # 28 -> 14 -> 7
    ((3, 32, 32), 2, 2, (8, 8, 8), 2.7646),  # 32 -> 16 -> 8, three channels in
    ((1, 8, 8), None, 1, (4, 4, 4), 2.9725),  # sized for the input: two convs in one block
    ((1, 28, 28), None, 2, (8, 7, 7), 3.5855),  # ... one conv in each of two blocks
])
def test_image_cnn_shapes(shape, convs, blocks, feature_shape, pinned_sum):
    model = _reinit(ImageCNN(shape, dim=16, channels=4, convs=convs)).eval()
    x = torch.randn(2, *shape)
    assert len(model.features) == blocks
    expected = convs or (2 if blocks == 1 else 1)
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in b) for b in model.features] == \
        [expected] * blocks
    assert model.features(x).shape == (2, *feature_shape)
    out = model(x)
    assert out.shape == (2, 16)
    assert model.dim == 16
    assert (out >= 0).all()  # ReLU output
    assert out.sum().item() == pytest.approx(pinned_sum, abs=1e-3)


def test_image_cnn_train_mode_and_gradients():
    torch.manual_seed(0)
    model = ImageCNN((1, 8, 8), dim=8, channels=4, dropout=0.0)
    x = torch.randn(3, 1, 8, 8)
    out = model(x)
    assert out.shape == (3, 8)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_image_cnn_eval_is_per_sample():
    torch.manual_seed(0)
    model = ImageCNN((1, 8, 8), dim=8, channels=4).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]))


def test_image_cnn_runs_channels_last_with_the_same_results_as_nchw():
    """Channels-last is a layout, not a model: NCHW weights load into it and give the same
    embeddings (to float rounding), so saved encoders keep working."""
    nchw = _reinit(ImageCNN((1, 28, 28), dim=8, channels=4, channels_last=False)).eval()
    fast = ImageCNN((1, 28, 28), dim=8, channels=4).eval()
    fast.load_state_dict(nchw.state_dict())
    conv = fast.features[1][0].weight  # 4 channels in (with 1, both layouts coincide)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), nchw(x), rtol=1e-4, atol=1e-5)


def test_image_cnn_embeds_a_large_batch_in_slices_with_the_same_results():
    """Evaluation cuts a batch into `infer_rows` slices (faster on CPU): a caller sees the same
    embeddings as from one pass, rows in order, and training still takes the batch whole."""
    whole = _reinit(ImageCNN((1, 28, 28), dim=8, channels=4, infer_rows=1000)).eval()
    sliced = ImageCNN((1, 28, 28), dim=8, channels=4, infer_rows=3).eval()
    sliced.load_state_dict(whole.state_dict())
    x = torch.randn(10, 1, 28, 28)
    calls = []
    sliced.project.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    with torch.no_grad():
        torch.testing.assert_close(sliced(x), whole(x), rtol=1e-4, atol=1e-5)
    assert calls == [3, 3, 3, 1]
    calls.clear()
    sliced.train()(x)
    assert calls == [10]


def test_random_shift_moves_each_image_within_its_bounds_and_repeats_the_border():
    torch.manual_seed(0)
    x = torch.arange(64 * 5 * 5, dtype=torch.float32).reshape(64, 1, 5, 5)
    out = random_shift(x, 1)
    assert out.shape == x.shape
    offsets = set()
    for image, moved in zip(x[:, 0], out[:, 0], strict=True):
        found = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if torch.equal(moved, torch.nn.functional.pad(
                     image[None, None], (1, 1, 1, 1), mode="replicate")[
                     0, 0, 1 + dy:6 + dy, 1 + dx:6 + dx])]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) == 9  # every offset drawn, each image its own


def test_image_cnn_shifts_only_in_training_and_reproducibly_with_a_seed():
    model = _reinit(ImageCNN((1, 28, 28), dim=8, channels=4, dropout=0.0, shift=2))
    x = torch.randn(6, 1, 28, 28)
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(1)
    torch.testing.assert_close(model(x), first)  # the same draw from the same seed
    plain = ImageCNN((1, 28, 28), dim=8, channels=4, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(x), first)  # the shift changed what training saw
    plain.load_state_dict(model.state_dict())  # the same BatchNorm statistics
    model.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))  # evaluation: no shift


def _gru() -> TextGRU:
    torch.manual_seed(0)
    return TextGRU(20, dim=8, embedding=6, hidden=5).eval()


def test_text_gru_shapes_with_variable_lengths():
    model = _gru()
    tokens = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0], [0, 0, 0, 0]])
    lengths = torch.tensor([3, 1, 0])  # length 0 is clamped to 1
    out = model(tokens, lengths)
    assert out.shape == (3, 8)
    assert model.dim == 8
    assert out.sum().item() == pytest.approx(1.3949, abs=1e-3)
    assert out[0, 0].item() == pytest.approx(0.5531, abs=1e-3)


def test_text_gru_length_zero_equals_one_padding_token():
    model = _gru()
    with torch.no_grad():
        empty = model(torch.tensor([[0, 0, 0]]), torch.tensor([0]))
        one_pad = model(torch.tensor([[0]]), torch.tensor([1]))
    torch.testing.assert_close(empty, one_pad)


def test_text_gru_padding_does_not_change_the_output():
    model = _gru()
    with torch.no_grad():
        short = model(torch.tensor([[5, 3, 2]]), torch.tensor([3]))
        padded = model(torch.tensor([[5, 3, 2, 0, 0, 0, 0]]), torch.tensor([3]))
        # same sequence in a batch with a longer one (so it is padded there)
        batch = model(torch.tensor([[9, 8, 7, 6, 5, 4], [5, 3, 2, 0, 0, 0]]),
                      torch.tensor([6, 3]))
        # garbage after the length is ignored too
        junk = model(torch.tensor([[5, 3, 2, 11, 12]]), torch.tensor([3]))
    torch.testing.assert_close(short, padded)
    torch.testing.assert_close(short, batch[1:2])
    torch.testing.assert_close(short, junk)


def test_text_gru_order_matters_and_gradients_flow():
    torch.manual_seed(0)
    model = TextGRU(20, dim=8, embedding=6, hidden=5, dropout=0.0)
    tokens = torch.tensor([[5, 3, 2], [2, 3, 5]])
    out = model(tokens, torch.tensor([3, 3]))
    assert not torch.allclose(out[0], out[1])
    out.sum().backward()
    assert model.embed.weight.grad is not None
    assert torch.all(model.embed.weight.grad[0] == 0)  # padding row never learns


def test_image_cnn_construction_leaves_batchnorm_statistics_untouched():
    torch.manual_seed(0)
    model = ImageCNN((1, 8, 8), dim=4, channels=2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.num_batches_tracked.item() == 0
            torch.testing.assert_close(module.running_var, torch.ones_like(module.running_var))
            torch.testing.assert_close(module.running_mean,
                                       torch.zeros_like(module.running_mean))


@pytest.mark.parametrize("side, setting, expected", [
    (8, "auto", 0.25),  # the digits: one block, `features.dropout`
    (28, "auto", 0.0),  # two blocks and more: none
    (8, 0.1, 0.1),  # a number means that dropout at any size
    (28, 0.1, 0.1),
])
def test_image_dropout_auto_follows_the_image_size(side, setting, expected):
    from mmcore.config import FeaturesConfig
    from mmcore.modalities import MODALITIES

    cfg = FeaturesConfig(image_dropout=setting)
    encoder = MODALITIES["image"].build_encoder(cfg, {"image_shape": [1, side, side]})
    rates = {m.p for m in encoder.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {expected}


def test_image_dropout_rejects_a_share_outside_zero_to_one():
    from pydantic import ValidationError

    from mmcore.config import FeaturesConfig

    with pytest.raises(ValidationError, match="image_dropout"):
        FeaturesConfig(image_dropout=1.0)
