"""Toward readable verdicts: Coverage's expectation for identical distributions (against a Monte-Carlo
estimate on identical Gaussians), Coverage at matched sizes (with k reduced where M <= k), and the paired
per-seed difference with its confidence interval (against scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dire.evaluation.common import paired_difference
from dire.metrics import coverage, coverage_expectation, diversity_metrics, matched_coverage


def test_coverage_expectation_by_hand():
    # 1 - (9*8*7*6*5) / (19*18*17*16*15) for N = M = 10, k = 5
    assert coverage_expectation(10, 10, 5) == pytest.approx(1 - 15120 / 1395360, rel=1e-12)
    assert coverage_expectation(500, 10, 5) == pytest.approx(0.0953, abs=5e-4)  # the quick-table case
    with pytest.raises(ValueError, match="n_real > k"):
        coverage_expectation(5, 10, 5)


def _coverage_numpy(real: np.ndarray, fake: np.ndarray, k: int) -> float:
    """Coverage by its definition, independently of dire.metrics: the share of real points whose k-NN ball
    (radius: distance to the k-th nearest other real point) holds at least one fake point."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    radii = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    return float((d_rf.min(axis=1) < radii).mean())


def test_coverage_expectation_matches_identical_gaussians():
    rng = np.random.default_rng(0)
    n_real, n_fake, k, trials = 40, 10, 5, 2000
    values = [_coverage_numpy(rng.normal(size=(n_real, 6)), rng.normal(size=(n_fake, 6)), k) for _ in range(trials)]
    se = np.std(values) / math.sqrt(trials)
    assert abs(np.mean(values) - coverage_expectation(n_real, n_fake, k)) < 4 * se
    # and dire.metrics.coverage is that definition
    real, fake = rng.normal(size=(n_real, 6)), rng.normal(size=(n_fake, 6))
    ours = coverage(real, np.zeros(n_real, int), fake, np.zeros(n_fake, int), k=k)["coverage"]
    assert ours == pytest.approx(_coverage_numpy(real, fake, k))


def test_matched_coverage_expectation_and_small_classes():
    rng = np.random.default_rng(1)
    trials, values, expected = 40, [], []
    for _ in range(trials):
        real = rng.normal(size=(200, 6))
        fake = rng.normal(size=(10, 6))
        out = matched_coverage(
            real, np.zeros(200, int), fake, np.zeros(10, int), k=5, draws=3, seed=int(rng.integers(1e6))
        )
        values.append(out["coverage"])
        expected.append(out["expected"])
    assert expected[0] == pytest.approx(coverage_expectation(10, 10, 5))
    assert abs(np.mean(values) - expected[0]) < 4 * np.std(values) / math.sqrt(trials) + 1e-3
    # M <= k: k drops to M - 1; M = 1 has no matched coverage
    real = rng.normal(size=(50, 6))
    small = matched_coverage(real, np.zeros(50, int), rng.normal(size=(3, 6)), np.zeros(3, int), k=5)
    assert small["k"] == 2 and 0 <= small["coverage"] <= 1
    assert small["expected"] == pytest.approx(coverage_expectation(3, 3, 2))
    one = matched_coverage(real, np.zeros(50, int), rng.normal(size=(1, 6)), np.zeros(1, int), k=5)
    assert math.isnan(one["coverage"])


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_paired_difference_matches_scipy(n):
    rng = np.random.default_rng(n)
    base = rng.normal(70, 3, size=n)
    treated = base + rng.normal(1.0, 0.5, size=n)
    out = paired_difference(list(treated), list(base))
    ci = stats.ttest_rel(treated, base).confidence_interval(0.95)
    assert out["delta"] == pytest.approx(float(np.mean(treated - base)), rel=1e-12)
    assert (out["low"], out["high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert out["excludes_zero"] == bool(ci.low > 0 or ci.high < 0)


def test_paired_difference_edge_cases():
    one = paired_difference([71.0], [70.0])
    assert one["delta"] == 1.0 and math.isnan(one["low"]) and not one["excludes_zero"]
    with pytest.raises(ValueError, match="same, non-zero number"):
        paired_difference([1.0, 2.0], [1.0])


def test_diversity_metrics_carry_coverage_expectations():
    rng = np.random.default_rng(2)
    real, real_y = rng.normal(size=(60, 6)), np.repeat([0, 1, 2], [25, 20, 15])
    fake, fake_y = rng.normal(size=(9, 6)), np.repeat([0, 1, 2], 3)  # M = 3 <= k = 5
    out = diversity_metrics(fake, fake_y, real, real_y, k=5, draws=4, seed=3)
    # per class N differs, so the expectation is the class mean of coverage_expectation(N_c, M_c, k)
    assert out["coverage_expected"] == pytest.approx(np.mean([coverage_expectation(n, 3, 5) for n in (25, 20, 15)]))
    matched = matched_coverage(real, real_y, fake, fake_y, k=5, draws=4, seed=3)
    assert out["coverage_matched"] == matched["coverage"]
    assert out["coverage_matched_expected"] == pytest.approx(coverage_expectation(3, 3, 2))
    assert out["coverage_matched_k"] == 2.0  # k reduced to M - 1
    # a bank smaller than the set: no matched draw, the rest still reported
    few = diversity_metrics(rng.normal(size=(24, 6)), np.repeat([0, 1, 2], 8), real[:21], np.repeat([0, 1, 2], 7))
    assert math.isnan(few["coverage_matched"]) and 0 <= few["coverage"] <= 1
