"""mmcore.drift: the MMD² permutation test, raw properties, prediction checks and the report, on
small known arrays. The calibration on the digits is benchmarks/drift_calibration.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from mmcore.drift import (
    DriftReport,
    build_report,
    check_batch,
    load_profile,
    plot_report,
    save_profile,
)
from mmcore.drift import profile as make_profile
from mmcore.drift.check import DEFAULT_PERMUTATIONS, default_permutations, planned_tests
from mmcore.drift.mmd import (
    median_bandwidth,
    min_permutations,
    mmd2_unbiased,
    mmd_test,
    rbf_kernel,
    squared_distances,
)
from mmcore.drift.predictions import (
    class_balance_test,
    confidence_test,
    estimated_accuracy,
    fit_temperature,
    softmax,
)
from mmcore.drift.properties import (
    brightness,
    contrast,
    ks_test,
    mannwhitney_test,
    oov_rate,
    oov_rates,
    sharpness,
    text_lengths,
)

# --- MMD² -----------------------------------------------------------------------------------


def test_min_permutations_reach_the_bonferroni_threshold():
    assert min_permutations(0.05) == 19
    assert min_permutations(0.05, 10) == 199
    assert min_permutations(0.01, 11) == 1099
    for alpha, m in [(0.05, 1), (0.05, 10), (0.05, 11), (0.01, 7), (0.1, 3)]:
        n = min_permutations(alpha, m)
        assert 1 / (1 + n) <= alpha / m < 1 / n  # reachable, and not with one fewer
    with pytest.raises(ValueError, match="alpha"):
        min_permutations(1.5)


def test_mmd2_unbiased_matches_the_definition():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)) + 0.5
    pooled = np.concatenate([x, y])
    k = rbf_kernel(squared_distances(pooled), 1.3)

    def mean_off_diagonal(block: np.ndarray) -> float:
        return (block.sum() - np.trace(block)) / (len(block) * (len(block) - 1))

    expected = (mean_off_diagonal(k[:5, :5]) + mean_off_diagonal(k[5:, 5:])
                - 2 * k[:5, 5:].mean())
    assert mmd2_unbiased(k, np.r_[[False] * 5, [True] * 4]) == pytest.approx(expected, abs=1e-12)


def test_median_bandwidth_is_the_median_pairwise_distance():
    pts = np.array([[0.0], [1.0], [3.0]])  # distances 1, 2, 3
    assert median_bandwidth(squared_distances(pts)) == pytest.approx(2.0)
    pts4 = np.array([[0.0], [1.0], [3.0], [7.0]])  # squared: 1 4 9 16 36 49, median 12.5
    assert median_bandwidth(squared_distances(pts4)) == pytest.approx(math.sqrt(12.5))
    same = np.zeros((5, 2))
    same[0] = 2.0  # 6 of 10 pairs coincide: the median of the others (all 2*sqrt(2))
    assert median_bandwidth(squared_distances(same)) == pytest.approx(math.sqrt(8))
    assert median_bandwidth(squared_distances(np.zeros((3, 2)))) == 1.0


def test_same_distribution_gives_mmd_near_zero_and_uniform_p_values():
    p_values, statistics = [], []
    for trial in range(40):
        rng = np.random.default_rng([7, trial])
        res = mmd_test(rng.normal(size=(80, 4)), rng.normal(size=(60, 4)), n_permutations=99,
                       seed=trial)
        p_values.append(res.p_value)
        statistics.append(res.statistic)
    alarms = sum(p <= 0.05 for p in p_values)
    # Under the null, alarms ~ Binomial(40, 0.05): P(X >= 7) < 0.01.
    assert alarms <= 6
    assert stats.binom.sf(alarms - 1, 40, 0.05) > 0.01
    assert 0.35 < np.mean(p_values) < 0.65  # uniform: mean 1/2
    assert abs(np.mean(statistics)) < 0.01  # unbiased: centred on 0
    assert alarms == 3 and np.mean(p_values) == pytest.approx(0.551)  # pinned (seeded)


def test_shifted_sample_is_detected_at_the_corrected_threshold():
    rng = np.random.default_rng(11)
    res = mmd_test(rng.normal(size=(200, 4)), rng.normal(size=(100, 4)) + 0.8,
                   n_permutations=199, seed=0)
    assert res.p_value == 1 / 200  # nothing in the null reaches the shifted statistic
    assert res.p_value <= 0.05 / 10
    assert res.statistic > 10 * np.quantile(res.null, 0.99)
    assert (res.n_reference, res.n_batch, len(res.null)) == (200, 100, 199)


def test_mmd_subsamples_and_is_deterministic():
    rng = np.random.default_rng(5)
    ref, new = rng.normal(size=(500, 3)), rng.normal(size=(300, 3))
    a = mmd_test(ref, new, n_permutations=49, seed=9, max_reference=120, max_batch=80)
    b = mmd_test(ref, new, n_permutations=49, seed=9, max_reference=120, max_batch=80)
    assert (a.n_reference, a.n_batch) == (120, 80)
    assert (a.statistic, a.p_value, a.bandwidth) == (b.statistic, b.p_value, b.bandwidth)
    np.testing.assert_array_equal(a.null, b.null)


def test_mmd_rejects_bad_input_with_a_clear_error():
    ok = np.zeros((5, 3))
    with pytest.raises(ValueError, match="2-D"):
        mmd_test(np.zeros(5), ok, n_permutations=9, seed=0)
    with pytest.raises(ValueError, match="3 dims, batch 2"):
        mmd_test(ok, np.zeros((5, 2)), n_permutations=9, seed=0)
    bad = np.ones((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"\(batch\): row 2 has a NaN"):
        mmd_test(ok, bad, n_permutations=9, seed=0)


# --- raw properties -------------------------------------------------------------------------


def test_image_properties_on_known_arrays():
    flat = np.full((2, 5, 5), 0.3)
    assert brightness(flat) == pytest.approx([0.3, 0.3])
    assert contrast(flat) == pytest.approx([0.0, 0.0])
    assert sharpness(flat) == pytest.approx([0.0, 0.0])
    ramp = np.arange(9.0).reshape(1, 3, 3)
    assert brightness(ramp) == pytest.approx([4.0])
    assert contrast(ramp) == pytest.approx([np.std(np.arange(9.0))])
    assert sharpness(ramp) == pytest.approx([0.0])  # a linear image has no Laplacian
    dot = np.zeros((1, 4, 4))
    dot[0, 1, 1] = 1.0  # interior Laplacian: -4, 1, 1, 0 -> variance 4.25
    assert sharpness(dot) == pytest.approx([4.25])
    channels = np.stack([np.zeros((3, 3)), np.ones((3, 3))])[None]  # (1, 2, 3, 3): grey 0.5
    assert brightness(channels) == pytest.approx([0.5])
    with pytest.raises(ValueError, match=r"\(n, H, W\) or \(n, C, H, W\)"):
        brightness(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 3x3"):
        sharpness(np.zeros((1, 2, 5)))


def test_text_properties_on_known_tokens():
    tokens = [["a", "b", "zz"], [], ["zz"], ["a"]]
    vocab = {"a", "b"}
    assert text_lengths(tokens).tolist() == [3, 0, 1, 1]
    assert oov_rates(tokens, vocab) == pytest.approx([1 / 3, 0.0, 1.0, 0.0])
    assert oov_rate(tokens, vocab) == pytest.approx(2 / 5)
    assert oov_rate([[]], vocab) == 0.0


def test_tests_on_identical_samples_detect_nothing():
    values = np.random.default_rng(0).normal(size=300)
    ks = ks_test("property:x", values, values.copy())
    assert (ks.statistic, ks.p_value) == (0.0, 1.0)
    zeros = mannwhitney_test("property:oov_rate", np.zeros(50), np.zeros(20))
    assert (zeros.statistic, zeros.p_value) == (0.5, 1.0)
    report = build_report([ks, zeros], alpha=0.05, n_batch=300)
    assert not report.drifted and report.detected == []


def test_mannwhitney_sees_more_unknown_words():
    rng = np.random.default_rng(1)
    ref = np.where(rng.random(400) < 0.05, 0.25, 0.0)
    new = np.where(rng.random(200) < 0.30, 0.25, 0.0)
    res = mannwhitney_test("property:oov_rate", ref, new)
    assert res.statistic > 0.5 and res.p_value < 1e-6


# --- predictions ----------------------------------------------------------------------------


def _labels_from(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(probs))[:, None] > probs.cumsum(axis=1)).sum(axis=1)


def test_temperature_scaling_recovers_the_temperature_and_the_accuracy():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(4000, 5))
    labels = _labels_from(softmax(logits, 2.0), rng)  # the truth: softmax(logits / 2)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.0, rel=0.08)
    calibrated = softmax(logits, t)
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    assert estimated_accuracy(calibrated) == pytest.approx(accuracy, abs=0.02)
    assert estimated_accuracy(softmax(logits)) > accuracy + 0.05  # uncalibrated: overconfident
    with pytest.raises(ValueError, match="label of row 1"):
        fit_temperature(logits[:3], np.array([0, 7, 1]))


def test_prediction_tests():
    rng = np.random.default_rng(4)
    ref = softmax(rng.normal(size=(600, 4)) * 2)
    same = confidence_test(ref, ref.copy())
    assert same.p_value == 1.0
    balance = class_balance_test(ref, ref[:300])
    assert balance.p_value > 0.5 and balance.details["dof"] == 3
    skewed = ref[ref.argmax(axis=1) == 0][:100]  # predicts class 0 only
    res = class_balance_test(ref, skewed)
    assert res.p_value < 1e-10
    assert res.batch.tolist() == [100.0, 0.0, 0.0, 0.0]
    assert res.details["total_variation"] == pytest.approx(1 - res.reference[0] / 600)
    with pytest.raises(ValueError, match="row 1 is not a probability vector"):
        confidence_test(ref, np.array([[0.5, 0.5, 0, 0], [0.9, 0.9, 0, 0]]))


# --- the report and check_batch -------------------------------------------------------------


def _profile(seed: int, n: int, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 3)) + shift
    images = np.clip(rng.normal(0.3 + shift, 0.2, size=(n, 6, 6)), 0, 1)
    words = ["a", "b", "c", "unknown"] if shift else ["a", "b", "c"]
    tokens = [list(rng.choice(words, size=rng.integers(1, 5))) for _ in range(n)]
    probs = softmax(rng.normal(size=(n, 3)) * 2)
    return make_profile(embeddings={"image": emb, "text": emb + rng.normal(size=emb.shape)},
                        images=images, tokens=tokens, vocab={"a", "b", "c"}, probs=probs)


def test_check_batch_reports_every_test_with_the_bonferroni_threshold():
    ref, same, shifted = _profile(0, 300), _profile(1, 120), _profile(2, 120, shift=0.5)
    names = planned_tests(ref, same)
    assert names == ["embedding:image", "embedding:text", "property:brightness",
                     "property:contrast", "property:sharpness", "property:text_length",
                     "property:oov_rate", "property:alignment", "prediction:confidence",
                     "prediction:class_balance"]
    report = check_batch(ref, same, alpha=0.05, seed=3)
    assert [t.result.name for t in report.tests] == names
    assert {t.threshold for t in report.tests} == {0.005}
    assert not report.drifted
    assert report.test("embedding:image").result.details["n_permutations"] == DEFAULT_PERMUTATIONS
    assert report.estimated_accuracy == pytest.approx(same.probs.max(axis=1).mean())
    drifted = check_batch(ref, shifted, alpha=0.05, seed=3)
    assert drifted.drifted
    assert {"embedding:image", "property:brightness", "property:oov_rate"} <= set(
        drifted.detected)


def test_check_batch_permutations_honour_the_corrected_alpha():
    ref, new = _profile(0, 60), _profile(1, 40)
    assert default_permutations(0.05, 10) == DEFAULT_PERMUTATIONS
    assert default_permutations(0.001, 10) == 9999
    with pytest.raises(ValueError, match="cannot reach alpha/10 = 0.005; use at least 199"):
        check_batch(ref, new, n_permutations=198)
    report = check_batch(ref, new, n_permutations=199, alpha=0.05)
    assert report.test("embedding:text").result.details["n_permutations"] == 199


def test_check_batch_is_deterministic():
    ref, new = _profile(0, 200), _profile(1, 100)
    a = check_batch(ref, new, seed=42, n_permutations=199)
    b = check_batch(ref, new, seed=42, n_permutations=199)
    assert [t.result.p_value for t in a.tests] == [t.result.p_value for t in b.tests]
    assert a.test("embedding:image").result.p_value == pytest.approx(0.055)  # pinned (11/200)


def test_report_json_round_trip_and_plot(tmp_path):
    report = check_batch(_profile(0, 200), _profile(2, 100, shift=0.5), seed=1,
                         n_permutations=199)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["n_tests"] == 10 and data["drifted"] is True
    assert DriftReport.from_dict(data) == report
    path = report.save_json(tmp_path / "out" / "report.json")
    assert DriftReport.from_dict(json.loads(path.read_text())) == report
    png = plot_report(report, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "report.png"]  # no temp files


def test_profiles_save_load_and_must_match(tmp_path):
    ref = _profile(0, 50)
    loaded = load_profile(save_profile(ref, tmp_path / "reference.npz"))
    assert loaded.n_rows == 50 and set(loaded.properties) == set(ref.properties)
    np.testing.assert_array_equal(loaded.embeddings["text"], ref.embeddings["text"])
    np.testing.assert_array_equal(loaded.probs, ref.probs)
    no_probs = make_profile(embeddings=ref.embeddings)
    with pytest.raises(ValueError, match=r"only in reference \['prediction:class_balance'"):
        check_batch(ref, no_probs)
    with pytest.raises(ValueError, match="same rows"):
        make_profile(embeddings={"image": np.zeros((4, 2))}, probs=np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="vocab"):
        make_profile(tokens=[["a"]])
