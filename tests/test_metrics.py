"""Tests for dire.metrics: each metric against an independent float64 numpy
reference written here from the definitions, plus hand cases and input checks."""

import json
import math

import numpy as np
import pytest
import torch
from prdc import compute_prdc
from prdc import prdc as prdc_impl

from dire import metrics as M

# --------------------------------------------------------------------------
# independent references
# --------------------------------------------------------------------------


def ref_cosine_matrix(x):
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = x[i] @ x[j] / (np.sqrt(x[i] @ x[i]) * np.sqrt(x[j] @ x[j]))
    return out


def ref_intra_cosine(x):
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
    return total / (n * (n - 1))


def ref_vendi(x, q=1.0):
    kernel = ref_cosine_matrix(x)
    lam = np.linalg.eigvalsh(kernel / kernel.shape[0])
    lam = lam[lam > 1e-12]
    if q == 1:
        return float(np.exp(-np.sum(lam * np.log(lam))))
    if math.isinf(q):
        return float(1.0 / lam.max())
    return float(np.sum(lam**q) ** (1.0 / (1.0 - q)))


def ref_dist(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def ref_radii(x, k):
    d = ref_dist(x, x)
    np.fill_diagonal(d, np.inf)  # "other" samples only
    return np.sort(d, axis=1)[:, k - 1]


def ref_prdc(real, fake, k):
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    n_real, n_fake = len(real), len(fake)
    r_real = ref_radii(real, k)
    d = ref_dist(real, fake)  # [real, fake]
    inside = np.zeros((n_real, n_fake), dtype=bool)  # fake j in ball of real i
    for i in range(n_real):
        for j in range(n_fake):
            inside[i, j] = d[i, j] < r_real[i]
    cov = np.mean([inside[i].any() for i in range(n_real)])
    prec = np.mean([inside[:, j].any() for j in range(n_fake)])
    dens = inside.sum() / (k * n_fake)
    if n_fake > k:
        r_fake = ref_radii(fake, k)
        rec = np.mean([any(d[i, j] < r_fake[j] for j in range(n_fake)) for i in range(n_real)])
    else:
        rec = float("nan")
    return {"precision": prec, "recall": rec, "density": dens, "coverage": cov}


def assert_prdc_close(got, want):
    for key in ("precision", "recall", "density", "coverage"):
        if math.isnan(want[key]):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want[key], abs=1e-12), key


def make_data(seed, n_per_class, d, classes=(0, 1, 2), shift=0.5):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, n in zip(classes, n_per_class):
        xs.append(rng.normal(size=(n, d)) + shift * c)
        ys.append(np.full(n, c))
    return np.concatenate(xs), np.concatenate(ys)


def all_plain_floats(obj):
    if isinstance(obj, dict):
        return all(all_plain_floats(v) for v in obj.values())
    return type(obj) is float


# --------------------------------------------------------------------------
# intra-class cosine
# --------------------------------------------------------------------------


def test_intra_class_cosine_matches_reference():
    x, y = make_data(0, (7, 4, 9), d=5, shift=1.0)
    out = M.intra_class_cosine(torch.from_numpy(x).float(), torch.from_numpy(y))
    for c in (0, 1, 2):
        want = ref_intra_cosine(torch.from_numpy(x[y == c]).float().double().numpy())
        assert out["per_class"][c] == pytest.approx(want, abs=1e-12)
    assert out["mean"] == pytest.approx(np.mean([out["per_class"][c] for c in (0, 1, 2)]), abs=1e-15)
    assert all_plain_floats(out)
    assert all(type(c) is int for c in out["per_class"])


def test_intra_class_cosine_hand_cases():
    z = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [3.0, 3.0], [5.0, 1.0]])
    y = np.array([0, 0, 1, 1, 2])
    out = M.intra_class_cosine(z, y)
    assert out["per_class"][0] == pytest.approx(0.0, abs=1e-15)  # orthogonal
    assert out["per_class"][1] == pytest.approx(1.0, abs=1e-15)  # identical
    assert 2 not in out["per_class"]  # single sample skipped
    assert out["mean"] == pytest.approx(0.5)
    lonely = M.intra_class_cosine(np.eye(3), np.array([0, 1, 2]))
    assert math.isnan(lonely["mean"]) and lonely["per_class"] == {}


# --------------------------------------------------------------------------
# Vendi score
# --------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1.0, 2.0, 0.5, math.inf])
@pytest.mark.parametrize("n_per_class,d", [((12, 20, 9), 4), ((3, 5, 6), 16)], ids=["n>d", "n<=d"])
def test_vendi_matches_reference(q, n_per_class, d):
    x, y = make_data(1, n_per_class, d)
    out = M.vendi(x, y, q=q)
    for c in (0, 1, 2):
        assert out["per_class"][c] == pytest.approx(ref_vendi(x[y == c], q), rel=1e-9)
    assert out["all"] == pytest.approx(ref_vendi(x, q), rel=1e-9)
    assert out["mean"] == pytest.approx(np.mean(list(out["per_class"].values())), rel=1e-15)
    assert all_plain_floats(out)


@pytest.mark.parametrize("q", [1.0, 2.0])
@pytest.mark.parametrize("n,d", [(30, 5), (8, 8), (6, 20)])
def test_vendi_dual_and_kernel_paths_agree(q, n, d):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=(n, 1))  # unequal norms
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert M._vendi_dual(u, q) == pytest.approx(M._vendi_kernel(u, q), rel=1e-9)
    # score_dual row-normalises itself: feeding raw rows gives the same number
    assert M._vendi_dual(x, q) == pytest.approx(M._vendi_dual(u, q), rel=1e-12)


@pytest.mark.parametrize("q", [1.0, 2.0])
@pytest.mark.parametrize("n,d", [(4, 10), (10, 10), (25, 3)])
def test_vendi_hand_cases(q, n, d):
    v = np.arange(1.0, d + 1)
    same = np.stack([v * (i + 1) for i in range(n)])  # parallel vectors, different norms
    assert M.vendi(same, np.zeros(n, dtype=int), q=q)["all"] == pytest.approx(1.0, rel=1e-9)
    if n <= d:
        ortho = np.eye(d)[:n] * 3.0
        assert M.vendi(ortho, np.zeros(n, dtype=int), q=q)["all"] == pytest.approx(n, rel=1e-9)


def test_vendi_single_sample_class():
    out = M.vendi(np.array([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]]), np.array([5, 7, 7]))
    assert out["per_class"][5] == pytest.approx(1.0)
    assert out["per_class"][7] == pytest.approx(2.0)


# --------------------------------------------------------------------------
# precision / recall / density / coverage
# --------------------------------------------------------------------------


def test_knn_radii_match_prdc_helper():
    x = np.random.default_rng(3).normal(size=(15, 4))
    # prdc's helper splits the columns over 8 threads: the same sums up to a few ulps
    np.testing.assert_allclose(M._knn_radii(x, 5), prdc_impl.compute_nearest_neighbour_distances(x, 5), rtol=1e-13)
    np.testing.assert_allclose(M._knn_radii(x, 5), ref_radii(x, 5), atol=1e-12)


def test_coverage_matches_reference_and_prdc(capsys):
    real, real_y = make_data(4, (20, 25, 18, 15), d=6, classes=(0, 1, 2, 3))
    fake, fake_y = make_data(5, (10, 8, 12), d=6, classes=(0, 1, 2))  # class 3 has no fakes
    out = M.coverage(torch.from_numpy(real), torch.from_numpy(real_y), fake, fake_y, k=5)
    assert capsys.readouterr().out == ""

    assert sorted(out["per_class"]) == [0, 1, 2]
    for c in (0, 1, 2):
        assert_prdc_close(out["per_class"][c], ref_prdc(real[real_y == c], fake[fake_y == c], 5))
    for key in ("precision", "recall", "density", "coverage"):
        assert out[key] == pytest.approx(np.mean([out["per_class"][c][key] for c in (0, 1, 2)]))

    # all-classes path: all real (class 3 included) vs all fake, against reference and prdc
    assert_prdc_close(out["all"], ref_prdc(real, fake, 5))
    want = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    capsys.readouterr()
    assert_prdc_close(out["all"], {key: float(v) for key, v in want.items()})
    assert all_plain_floats(out)
    json.dumps(out)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_distance_path_matches_compute_prdc(k, capsys):
    real, _ = make_data(6, (30,), d=5, classes=(0,))
    fake, _ = make_data(7, (17,), d=5, classes=(0,), shift=0.3)
    want = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    assert_prdc_close(M._prdc_from_distances(real, fake, k), {key: float(v) for key, v in want.items()})


def test_metrics_start_no_threads_and_leave_warning_filters_alone(monkeypatch):
    # prdc's compute_prdc ran sklearn's threaded Parallel, whose threads race on the process-wide warning
    # filters (scikit-learn 1.9.1 empties them after ~150 calls); the metrics must stay in the calling thread
    import threading
    import warnings

    def refuse(self):
        raise AssertionError(f"the metrics started a thread ({self!r})")

    real, real_y = make_data(8, (40,) * 3, d=6, classes=(0, 1, 2))
    fake, fake_y = make_data(9, (10,) * 3, d=6, classes=(0, 1, 2), shift=0.2)
    filters = list(warnings.filters)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    out = M.diversity_metrics(fake, fake_y, real, real_y, k=5, draws=3)
    assert warnings.filters == filters
    assert 0.0 <= out["coverage"] <= 1.0


@pytest.mark.parametrize("n_fake", [1, 3, 5, 6])  # k = 5: n_fake <= k -> NaN recall; k + 1 is computable
def test_coverage_small_fake_set(n_fake, capsys):
    real, real_y = make_data(8, (14, 11), d=3, classes=(0, 1))
    fake0, _ = make_data(9, (n_fake,), d=3, classes=(0,))
    fake1, _ = make_data(10, (9,), d=3, classes=(1,), shift=0.5)
    fake = np.concatenate([fake0, fake1])
    fake_y = np.array([0] * n_fake + [1] * 9)
    out = M.coverage(real, real_y, fake, fake_y, k=5)
    assert capsys.readouterr().out == ""

    assert_prdc_close(out["per_class"][0], ref_prdc(real[real_y == 0], fake0, 5))
    assert_prdc_close(out["per_class"][1], ref_prdc(real[real_y == 1], fake1, 5))
    rec0 = out["per_class"][0]["recall"]
    assert math.isnan(rec0) == (n_fake <= 5)
    want_rec = out["per_class"][1]["recall"] if math.isnan(rec0) else (rec0 + out["per_class"][1]["recall"]) / 2
    assert out["recall"] == pytest.approx(want_rec)
    assert_prdc_close(out["all"], ref_prdc(real, fake, 5))


def test_coverage_all_recall_nan_when_every_class_small():
    real, real_y = make_data(11, (8, 8), d=2, classes=(0, 1))
    out = M.coverage(real, real_y, real[[0, 8]] + 0.01, np.array([0, 1]), k=5)
    assert math.isnan(out["recall"]) and math.isnan(out["all"]["recall"])
    assert not math.isnan(out["coverage"]) and not math.isnan(out["all"]["coverage"])


def test_coverage_real_set_of_k_plus_one_is_enough():
    real, real_y = make_data(12, (6,), d=3, classes=(0,))
    fake, fake_y = make_data(13, (7,), d=3, classes=(0,))
    assert_prdc_close(M.coverage(real, real_y, fake, fake_y, k=5)["per_class"][0], ref_prdc(real, fake, 5))


def test_coverage_too_few_real_samples():
    real, real_y = make_data(14, (10, 4), d=3, classes=(0, 1))
    fake, fake_y = make_data(15, (3, 3), d=3, classes=(0, 1))
    with pytest.raises(ValueError, match=r"at least k \+ 1 = 6 real samples.*class 1: 4"):
        M.coverage(real, real_y, fake, fake_y, k=5)


# --------------------------------------------------------------------------
# diversity_metrics
# --------------------------------------------------------------------------


def test_diversity_metrics_flat_dict(capsys):
    real, real_y = make_data(16, (15, 15, 15), d=8)
    fake, fake_y = make_data(17, (4, 4, 4), d=8)
    out = M.diversity_metrics(torch.from_numpy(fake).float(), torch.from_numpy(fake_y), real, real_y)
    assert capsys.readouterr().out == ""
    assert set(out) == {
        "vendi",
        "vendi_all",
        "coverage",
        "coverage_expected",
        "coverage_matched",
        "coverage_matched_expected",
        "coverage_matched_k",
        "precision",
        "recall",
        "density",
        "coverage_all",
        "intra_class_cosine",
    }
    assert all(type(v) is float for v in out.values())
    fake32 = torch.from_numpy(fake).float().double().numpy()
    assert out["vendi"] == pytest.approx(M.vendi(fake32, fake_y)["mean"])
    assert out["vendi_all"] == pytest.approx(ref_vendi(fake32))
    assert out["intra_class_cosine"] == pytest.approx(M.intra_class_cosine(fake32, fake_y)["mean"])
    cov = M.coverage(real, real_y, fake32, fake_y)
    assert out["coverage"] == cov["coverage"] and out["coverage_all"] == cov["all"]["coverage"]
    assert math.isnan(out["recall"])  # 4 fakes per class <= k = 5


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------

GOOD_X = np.random.default_rng(18).normal(size=(12, 3))
GOOD_Y = np.repeat([0, 1], 6)


@pytest.mark.parametrize(
    "z,labels,match",
    [
        (GOOD_X[:, 0], GOOD_Y, r"z: expected a 2-D array.*got shape \(12,\)"),
        (GOOD_X[None], GOOD_Y, r"2-D array.*\(1, 12, 3\)"),
        (np.empty((0, 3)), np.empty(0, dtype=int), r"at least one sample.*\(0, 3\)"),
        (GOOD_X, GOOD_Y[:, None], r"labels: expected a 1-D array of 12 labels, got shape \(12, 1\)"),
        (GOOD_X, GOOD_Y[:-1], r"one label per row of z \(12 rows\), got 11"),
        (GOOD_X, GOOD_Y.astype(float), r"integer class labels, got dtype float64"),
        (GOOD_X, torch.from_numpy(GOOD_Y).float(), r"integer class labels, got dtype torch.float32"),
        (np.where(np.arange(36).reshape(12, 3) == 4, np.nan, GOOD_X), GOOD_Y, r"finite.*1 non-finite"),
        (torch.full((12, 3), float("inf")), GOOD_Y, r"finite.*36 non-finite"),
        (np.array([["a", "b"]] * 12), GOOD_Y, r"float embeddings, got dtype <U1"),
        (np.vstack([GOOD_X[:11], np.zeros((1, 3))]), GOOD_Y, r"non-zero embeddings.*\[11\]"),
    ],
)
def test_bad_inputs_single_set(z, labels, match):
    for fn in (M.intra_class_cosine, M.vendi):
        with pytest.raises(ValueError, match=match):
            fn(z, labels)


@pytest.mark.parametrize("q", [-1.0, float("nan"), "two"])
def test_bad_q(q):
    with pytest.raises(ValueError, match="q: expected a non-negative number"):
        M.vendi(GOOD_X, GOOD_Y, q=q)


@pytest.mark.parametrize("k", [0, -2, 2.5, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k: expected a positive integer"):
        M.coverage(GOOD_X, GOOD_Y, GOOD_X, GOOD_Y, k=k)


def test_bad_inputs_pairs():
    rng = np.random.default_rng(19)
    real, real_y = rng.normal(size=(20, 4)), np.repeat([0, 1], 10)
    with pytest.raises(ValueError, match=r"same dimension d, got real d=4 and fake d=5"):
        M.coverage(real, real_y, rng.normal(size=(4, 5)), np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"classes \[2, 7\] are missing from real_labels.*\[0, 1\]"):
        M.coverage(real, real_y, rng.normal(size=(4, 4)), np.array([0, 2, 7, 7]))
    with pytest.raises(ValueError, match=r"real_labels: expected one label per row of real"):
        M.coverage(real, real_y[:5], real, real_y)
    bad_fake = rng.normal(size=(4, 4))
    bad_fake[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"fake: expected finite values"):
        M.diversity_metrics(bad_fake, np.array([0, 0, 1, 1]), real, real_y)
    with pytest.raises(ValueError, match=r"missing from real_labels"):
        M.diversity_metrics(rng.normal(size=(4, 4)), np.array([0, 0, 3, 3]), real, real_y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_distances_match_prdc_helper_and_float64(dtype):
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(37, 9)).astype(dtype), rng.normal(size=(13, 9)).astype(dtype)
    got = M._distances(x, y)
    np.testing.assert_allclose(
        got, prdc_impl.compute_pairwise_distance(x, y), rtol=1e-6 if dtype == np.float32 else 1e-13
    )
    exact = np.sqrt(((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1))
    np.testing.assert_allclose(got, exact, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert np.all(np.diag(M._distances(x)) == 0)
