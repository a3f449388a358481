"""mmcore.training: the fit loop and its batch sources (in memory and streamed from Parquet)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch._dynamo  # noqa: F401  (sets TORCHINDUCTOR_CACHE_DIR: see the note below)
import torch.nn.functional as F
from torch import nn

from mmcore.io.parquet import embedding_array
from mmcore.losses import classification_loss
from mmcore.training import ArrayBatches, ParquetBatches, fit, resolve_device, seed_everything
from mmcore.training.batches import sample_decoder
from mmcore.training.loop import Progress

# torch sets TORCHINDUCTOR_CACHE_DIR when torch._dynamo is first imported, which the first
# optimizer does lazily; importing it up front keeps conftest's environment-leak check quiet.


def _blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well separated Gaussian blobs in 2-D."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = rng.normal(scale=0.5, size=(n, 2)) + np.where(labels[:, None] == 1, 1.0, -1.0)
    return x.astype(np.float32), labels.astype(np.int64)


def _loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    logits = model(batch["x"])
    loss = F.cross_entropy(logits, batch["label"])
    correct = (logits.argmax(1) == batch["label"]).sum().item()
    return loss, {"correct": correct, "count": len(batch["label"])}


def _train(seed: int = 0, epochs: int = 5, **kwargs):
    seed_everything(seed)
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    batches = ArrayBatches({"x": x, "label": y}, batch_size=16, seed=seed)
    history = fit(model, batches, _loss, epochs=epochs, lr=0.05, **kwargs)
    return model, history


def test_fit_learns_a_separable_problem():
    x, y = _blobs()
    calls = []
    model, history = _train(
        evaluate=lambda m: {"val_acc": (m(torch.from_numpy(x)).argmax(1).numpy() == y).mean()},
        on_epoch_end=lambda epoch, record: calls.append((epoch, dict(record))),
    )
    assert len(history) == 5
    assert set(history[0]) == {"train_loss", "train_acc", "val_acc"}
    assert history[-1]["train_acc"] >= 0.95
    assert history[-1]["val_acc"] >= 0.95
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[0]["train_loss"] == pytest.approx(0.3925, abs=1e-3)
    assert history[0]["train_acc"] == pytest.approx(0.825)
    assert history[-1]["train_loss"] == pytest.approx(0.00665, abs=1e-4)
    assert not model.training  # fit leaves the model in eval mode
    # on_epoch_end: once per epoch, in order, with that epoch's record
    assert [epoch for epoch, _ in calls] == [1, 2, 3, 4, 5]  # counted from 1
    assert [record for _, record in calls] == history


def test_fit_is_deterministic_for_a_seed():
    model_a, history_a = _train(seed=3)
    model_b, history_b = _train(seed=3)
    assert history_a == history_b
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    _, history_c = _train(seed=4)
    assert history_c != history_a


def test_fit_without_counts_reports_loss_only():
    seed_everything(0)
    model = nn.Linear(2, 1)
    x = torch.randn(8, 2)

    def loss_fn(m, batch):
        return m(batch["x"]).pow(2).mean(), {}

    history = fit(model, ArrayBatches({"x": x.numpy()}, batch_size=4), loss_fn,
                  epochs=3, lr=0.1)
    assert [set(h) for h in history] == [{"train_loss"}] * 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_select_best_restores_best_weights_exactly():
    seed_everything(0)
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    scores = iter([0.2, 0.9, 0.5, 0.1])
    states: list[dict[str, torch.Tensor]] = []

    def remember(epoch, record):
        states.append({k: v.clone() for k, v in model.state_dict().items()})

    history = fit(model, ArrayBatches({"x": x, "label": y}, batch_size=16), _loss, epochs=4,
                  lr=0.05, evaluate=lambda m: {"score": next(scores)}, select_best="score",
                  on_epoch_end=remember)
    assert [h["score"] for h in history] == [0.2, 0.9, 0.5, 0.1]
    assert len(states) == 4
    final = model.state_dict()
    for name, value in final.items():
        assert torch.equal(value, states[1][name]), name
    assert not all(torch.equal(final[k], states[3][k]) for k in final)


def test_classification_loss_with_fit():
    seed_everything(0)
    x, y = _blobs(60)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, batch):
            return self.linear(batch["x"])

    history = fit(Model(), ArrayBatches({"x": x, "label": y}, batch_size=10),
                  classification_loss, epochs=4, lr=0.1)
    assert history[-1]["train_acc"] >= 0.95


def test_array_batches_cover_every_row_once_and_reshuffle():
    n = 23
    batches = ArrayBatches({"i": np.arange(n), "x": np.arange(n, dtype=np.float32) * 2},
                           batch_size=5, seed=7)
    orders = []
    for epoch in range(3):
        got = list(batches(epoch))
        assert [len(b["i"]) for b in got] == [5, 5, 5, 5, 3]
        for b in got:
            assert torch.equal(b["x"], b["i"].float() * 2)  # columns stay aligned
        order = torch.cat([b["i"] for b in got]).tolist()
        assert sorted(order) == list(range(n))
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]
    assert [b["i"].tolist() for b in batches(1)] == [
        orders[1][i:i + 5] for i in range(0, n, 5)]  # same epoch, same order
    plain = ArrayBatches({"i": np.arange(n)}, batch_size=10, shuffle=False)
    assert torch.cat(list(b["i"] for b in plain(0))).tolist() == list(range(n))
    assert torch.cat(list(b["i"] for b in plain(1))).tolist() == list(range(n))


def _grouped_file(path, n: int = 50, group: int = 12):
    table = pa.table({"i": pa.array(range(n), pa.int64()),
                      "label": pa.array([i % 3 for i in range(n)], pa.int64())})
    pq.write_table(table, path, row_group_size=group)
    return path


def _decode(table: pa.Table) -> dict[str, torch.Tensor]:
    return {"i": torch.from_numpy(table.column("i").to_numpy().copy())}


def test_parquet_batches_stream_row_groups(tmp_path):
    path = _grouped_file(tmp_path / "g.parquet")
    assert pq.ParquetFile(path).num_row_groups == 5  # 12, 12, 12, 12, 2
    batches = ParquetBatches(path, ["i"], _decode, batch_size=5, seed=1)
    orders = []
    for epoch in range(2):
        got = [b["i"].tolist() for b in batches(epoch)]
        assert all(0 < len(b) <= 5 for b in got)
        # a batch never spans two row groups
        assert all(len({i // 12 for i in b}) == 1 for b in got)
        order = [i for b in got for i in b]
        assert sorted(order) == list(range(50))
        orders.append(order)
    assert orders[0] != orders[1]
    assert [i for b in batches(0) for i in b["i"].tolist()] == orders[0]  # reproducible
    plain = ParquetBatches(path, ["i"], _decode, batch_size=5, shuffle=False)
    got = [b["i"].tolist() for b in plain(0)]
    assert [len(b) for b in got] == [5, 5, 2] * 4 + [2]
    assert len(plain) == len(got) == 13  # known before an epoch runs (one-cycle needs it)
    assert [i for b in got for i in b] == list(range(50))


def test_parquet_batches_with_sample_decoder(tmp_path):
    rng = np.random.default_rng(0)
    n = 20
    images = rng.normal(size=(n, 4)).astype(np.float32)
    tokens = [list(range(2, 2 + i % 5)) for i in range(n)]  # includes empty rows
    table = pa.table({
        "id": [f"r{i}" for i in range(n)],
        "label": pa.array(np.arange(n) % 2, pa.int64()),
        "image": embedding_array(images),
        "tokens": pa.array(tokens, pa.list_(pa.int32())),
    })
    path = tmp_path / "s.parquet"
    pq.write_table(table, path, row_group_size=7)

    image_batches = ParquetBatches(path, ["label", "image"],
                                   sample_decoder("image", {"image_shape": [1, 2, 2]}),
                                   batch_size=3, shuffle=False)
    got = list(image_batches(0))
    assert got[0]["image"].shape == (3, 1, 2, 2)
    assert got[0]["label"].dtype == torch.int64
    stacked = torch.cat([b["image"] for b in got]).reshape(n, 4)
    torch.testing.assert_close(stacked, torch.from_numpy(images))

    text_batches = ParquetBatches(path, ["label", "tokens"], sample_decoder("text", {}),
                                  batch_size=3, seed=2)
    seen = 0
    for batch in text_batches(0):
        tok, lengths = batch["tokens"], batch["lengths"]
        assert tok.shape[0] == lengths.shape[0] == batch["label"].shape[0]
        for row, length in zip(tok.tolist(), lengths.tolist(), strict=True):
            k = sum(1 for t in row if t)
            assert row[:k] == list(range(2, 2 + k))  # a row of `tokens`, from its start
            assert length == max(k, 1)
        seen += len(lengths)
    assert seen == n


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a CPU-only machine")
def test_cuda_device_without_cuda_is_a_clear_error():
    from mmcore.training import resolve_device

    with pytest.raises(ValueError, match="device=cuda"):
        resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_onecycle_warms_up_then_anneals_per_step():
    seen = []

    def record_lr(model, batch):
        seen.append(optimizer_lr[0].param_groups[0]["lr"])
        return _loss(model, batch)

    seed_everything(0)
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    batches = ArrayBatches({"x": x, "label": y}, batch_size=16)
    optimizer_lr = []
    real_adamw = torch.optim.AdamW

    def spy(*args, **kwargs):
        optimizer_lr.append(real_adamw(*args, **kwargs))
        return optimizer_lr[-1]

    torch.optim.AdamW = spy
    try:
        history = fit(model, batches, record_lr, epochs=4, lr=0.05, schedule="onecycle")
    finally:
        torch.optim.AdamW = real_adamw
    assert len(batches) == 8 and len(seen) == 32  # steps known from len(batches)
    peak = seen.index(max(seen))
    assert max(seen) == pytest.approx(0.05)
    assert 0 < peak < 16  # warm-up over the first quarter, then down
    assert seen[0] < 0.01 and seen[-1] < 1e-4
    assert history[-1]["train_acc"] >= 0.95


def test_onecycle_needs_the_number_of_steps():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        fit(model, lambda epoch: iter(()), _loss, epochs=2, lr=0.1, schedule="onecycle")


@pytest.mark.parametrize("steps", [1, 4, 7])
def test_onecycle_too_short_to_cycle_runs_at_a_constant_rate(steps):
    # 4 steps made torch's OneCycleLR divide by zero (its warm-up ended on step 0).
    x, y = _blobs()
    batches = ArrayBatches({"x": x[:16 * steps], "label": y[:16 * steps]}, batch_size=16)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    history = fit(model, batches, _loss, epochs=1, lr=0.05, schedule="onecycle")
    assert len(batches) == steps and len(history) == 1


def test_patience_stops_after_epochs_without_a_better_score():
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    _, history = _train(epochs=6, evaluate=lambda m: {"score": next(scores)},
                        select_best="score", patience=2)
    assert [h["score"] for h in history] == [0.5, 0.7, 0.6, 0.65]  # 2 epochs after 0.7: stop


def test_progress_hook_reports_epochs_rates_and_time_left():
    reports: list[Progress] = []
    _, history = _train(epochs=3, on_progress=reports.append, progress_every_s=0.0)
    ends = [p for p in reports if p.done]
    assert [p.epoch for p in ends] == [0, 1, 2]
    assert all(p.rows == 120 and p.steps == 8 and p.step == 8 for p in ends)
    assert all(p.rows_per_s > 0 for p in reports)
    assert ends[-1].eta_s == 0.0 and ends[0].eta_s > 0
    mid = [p for p in reports if not p.done]
    assert len(mid) == 24 and mid[0].step == 1 and mid[0].eta_s is not None
    assert "epoch 1/3" in mid[0].line() and "batches" in mid[0].line()
    assert ends[0].line().startswith("epoch 1/3  done")


def test_resolve_device_auto_is_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device=cuda"):
            resolve_device("cuda")


def test_fit_names_the_loss_for_what_it_measures_and_records_other_measures_per_row():
    seed_everything(0)
    x, y = _blobs(60)
    model = nn.Linear(2, 2)

    def loss_fn(m, batch):  # optimises twice the NLL, and reports the NLL itself
        nll = F.cross_entropy(m(batch["x"]), batch["label"], reduction="sum")
        return 2 * nll / len(batch["label"]), {"count": len(batch["label"]), "nll": nll.item()}

    history = fit(model, ArrayBatches({"x": x, "label": y}, batch_size=10), loss_fn, epochs=2,
                  lr=0.1, loss_name="double_nll")
    assert [set(h) for h in history] == [{"train_double_nll", "train_nll"}] * 2
    for record in history:
        assert record["train_double_nll"] == pytest.approx(2 * record["train_nll"])


def test_late_fusion_trains_on_its_experts_nll_sum_and_reports_the_fused_nll_beside_it():
    from mmcore.config import TrainingConfig
    from mmcore.fusion.fusion_classifier import build_classifier
    from mmcore.losses import classification_loss_name

    seed_everything(0)
    x, y = _blobs(60)
    rng = np.random.default_rng(0)
    arrays = {"image": x, "text": rng.normal(size=x.shape).astype(np.float32), "label": y}
    late = build_classifier(TrainingConfig(fusion="late", hidden=8), ["image", "text"], 2, 2)
    concat = build_classifier(TrainingConfig(fusion="concat", hidden=8), ["image", "text"], 2, 2)
    assert (classification_loss_name(late), classification_loss_name(concat)) == \
        ("expert_nll_sum", "nll")
    history = fit(late, ArrayBatches(arrays, batch_size=10), classification_loss, epochs=2,
                  lr=0.05, loss_name=classification_loss_name(late))
    assert set(history[0]) == {"train_expert_nll_sum", "train_nll", "train_acc"}
    # Two experts' NLLs summed, against one fused prediction's: different measures.
    assert history[0]["train_expert_nll_sum"] > history[0]["train_nll"]
    history = fit(concat, ArrayBatches(arrays, batch_size=10), classification_loss, epochs=1,
                  lr=0.05, loss_name=classification_loss_name(concat))
    assert set(history[0]) == {"train_nll", "train_acc"}
