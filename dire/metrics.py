"""Diversity and fidelity metrics for condensed (synthetic) data sets.

Every metric here acts on *embeddings* -- float arrays ``[N, d]`` -- together
with integer class labels ``[N]``.  Computing the embeddings (teacher forward
pass, feature bank) is another module's job.  Inputs may be ``torch.Tensor``
(any device / dtype; detached and copied to the CPU) or ``numpy`` arrays; all
arithmetic is done in float64 and every returned number is a plain Python
``float`` (``NaN`` where a value is undefined, see below).

Definitions
-----------
Intra-class cosine similarity
    For a class with samples ``z_1..z_n`` (``n >= 2``) the mean of
    ``cos(z_i, z_j)`` over ordered pairs ``i != j``; the reported ``"mean"`` is
    the unweighted average over classes.  Lower means more diverse.  Classes
    with a single sample are skipped (absent from ``"per_class"``); when no
    class has two samples the mean is ``NaN``.

Vendi score (Friedman & Dieng, 2023)
    ``VS_q = exp(H_q(lambda))`` where ``lambda`` are the eigenvalues of ``K / n``,
    ``K`` is the cosine-similarity kernel of the ``n`` embeddings
    (``K_ii = 1``) and ``H_q`` is the Renyi entropy of order ``q``; i.e. the
    Hill number ``(sum_i lambda_i^q)^(1 / (1 - q))``, with
    ``exp(-sum_i lambda_i log lambda_i)`` for ``q = 1`` (the default) and
    ``1 / max_i lambda_i`` for ``q = inf``.  It ranges from 1 (all embeddings
    parallel) to ``n`` (mutually orthogonal).  Computed per class and averaged
    over classes (``"mean"``), and on all samples pooled (``"all"``).
    Implementation: the ``vendi_score`` package.  When ``n > d`` it uses
    ``vendi.score_dual`` (eigenvalues of ``X^T X / n`` for row-normalised ``X``,
    which has the same non-zero spectrum as ``K / n``); when ``n <= d`` it
    builds ``K`` with torchmetrics' ``pairwise_cosine_similarity(...,
    zero_diagonal=False)`` and calls ``vendi.score_K``.  (``vendi.score_X`` is
    not used: vendi-score 0.0.3 ignores its ``q`` argument.)

Precision / recall / density / coverage (Naeem et al., 2020)
    Per class, *real* = embeddings of the real training images of that class,
    *fake* = synthetic embeddings of that class.  The k-NN radius of a sample
    is the Euclidean distance to its ``k``-th nearest *other* sample of the
    same set (``k = 5`` by default); a ball contains a point when the distance
    is strictly smaller than the radius.  With ``M`` fake and ``N`` real
    samples:

    * precision = fraction of fake samples inside at least one real ball;
    * recall    = fraction of real samples inside at least one fake ball
      (balls built with the fake-set radii);
    * density   = ``1 / (k M) * sum_fake sum_real 1[fake in real ball]``;
    * coverage  = fraction of real samples whose ball contains >= 1 fake.

    Values are computed per class (over the classes present in the fake set)
    and averaged over those classes; ``"all"`` is the same computation on all
    real vs all fake samples, ignoring labels (so it also uses real samples of
    classes that have no fake samples).  Implementation: prdc's formulas
    (``prdc.compute_prdc``, which the tests compare against) on the distances
    its ``compute_pairwise_distance`` gives, but computed in the calling
    thread.  prdc's helper asks sklearn for ``n_jobs=8``: a thread pool
    started per call (most of a matched Coverage's time, which makes hundreds
    of tiny matrices), whose threads each save and reset the process-wide
    warning filters (scikit-learn 1.9.1); after ~150 calls in one process
    they race and leave the filters empty.  From then on every call printed
    a warning (24 000 lines in one quick-01 rerun), and with no filters left,
    warnings that Python hides by default would be shown too.
    When a class has ``n_fake <= k`` fake samples the fake-side
    k-NN radius does not exist: recall is ``NaN`` for that class and the
    class average of recall is a *nan-mean* (``NaN`` only if every class is
    ``NaN``); precision, density and coverage are still reported.  A class
    with ``n_real <= k`` real samples raises ``ValueError``.
    Memory: like prdc, this materialises ``N x N`` and ``N x M`` distance matrices, so
    the all-classes version is quadratic in the total number of real samples.

Cosine-based metrics (intra-class cosine, Vendi) reject all-zero embeddings,
whose cosine similarity is undefined.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.metrics import pairwise_distances
from vendi_score import vendi as _vendi_pkg

__all__ = [
    "intra_class_cosine",
    "vendi",
    "coverage",
    "coverage_expectation",
    "matched_coverage",
    "diversity_metrics",
]

_PRDC_KEYS = ("precision", "recall", "density", "coverage")


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------
def _embeddings(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a finite float64 numpy array ``[N, d]`` (N, d >= 1)."""
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name}: expected real-valued float embeddings, got dtype {x.dtype}")
        arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        arr = np.asarray(x)
        if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name}: expected real-valued float embeddings, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of embeddings [N, d], got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name}: expected at least one sample with at least one feature, got shape {tuple(arr.shape)}"
        )
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name}: expected finite values, got {bad} non-finite (NaN/inf) entries")
    return arr


def _labels(y: Any, n: int, name: str, emb_name: str) -> np.ndarray:
    """Return ``y`` as an int64 numpy array of length ``n``."""
    if isinstance(y, torch.Tensor):
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{name}: expected integer class labels, got dtype {y.dtype}")
        arr = y.detach().cpu().numpy()
    else:
        arr = np.asarray(y)
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of {n} labels, got shape {tuple(arr.shape)}")
    if arr.shape[0] != n:
        raise ValueError(f"{name}: expected one label per row of {emb_name} ({n} rows), got {arr.shape[0]} labels")
    return arr.astype(np.int64)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive integer number of neighbours, got {k!r}")
    return int(k)


def _check_q(q: Any) -> float:
    try:
        qf = float(q)
    except (TypeError, ValueError):
        raise ValueError(f"q: expected a non-negative number (order of the Vendi score), got {q!r}") from None
    if math.isnan(qf) or qf < 0:
        raise ValueError(f"q: expected a non-negative number (order of the Vendi score), got {q!r}")
    return qf


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Row-normalise; cosine similarity is undefined for all-zero rows."""
    norms = np.linalg.norm(x, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"{name}: cosine similarity needs non-zero embeddings, got {zero.size} all-zero row(s) "
            f"(first indices {zero[:5].tolist()})"
        )
    return x / norms[:, None]


def _classes(labels: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(labels)]


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")


# --------------------------------------------------------------------------
# intra-class cosine similarity
# --------------------------------------------------------------------------
def _mean_offdiag_cosine(u: np.ndarray) -> float:
    """Mean of cos(u_i, u_j) over i != j for unit rows ``u`` (n >= 2), in O(n d)."""
    n = u.shape[0]
    s = u.sum(axis=0)
    total = float(s @ s) - float(np.einsum("ij,ij->", u, u))  # sum_{i,j} - sum_i
    return total / (n * (n - 1))


def intra_class_cosine(z, labels) -> dict:
    """Mean pairwise (i != j) cosine similarity within each class.

    Returns ``{"mean": float, "per_class": {class: float}}``; classes with a
    single sample are skipped, and ``"mean"`` is ``NaN`` when none is left.
    """
    x = _embeddings(z, "z")
    y = _labels(labels, x.shape[0], "labels", "z")
    u = _unit_rows(x, "z")
    per_class: dict[int, float] = {}
    for c in _classes(y):
        uc = u[y == c]
        if uc.shape[0] >= 2:
            per_class[c] = _mean_offdiag_cosine(uc)
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {"mean": mean, "per_class": per_class}


# --------------------------------------------------------------------------
# Vendi score
# --------------------------------------------------------------------------
def _vendi_q_arg(q: float):
    # vendi_score.entropy_q compares q == 1 and q == "inf"
    return "inf" if math.isinf(q) else q


def _vendi_dual(u: np.ndarray, q: float) -> float:
    """n > d path: eigenvalues of X^T X / n (score_dual row-normalises X itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return float(_vendi_pkg.score_dual(u, q=_vendi_q_arg(q)))


def _vendi_kernel(u: np.ndarray, q: float) -> float:
    """n <= d path: eigenvalues of K / n with K the cosine kernel (K_ii = 1)."""
    from torchmetrics.functional.pairwise import pairwise_cosine_similarity

    kernel = pairwise_cosine_similarity(torch.from_numpy(u), zero_diagonal=False).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return float(_vendi_pkg.score_K(kernel, q=_vendi_q_arg(q)))


def _vendi_one(u: np.ndarray, q: float) -> float:
    n, d = u.shape
    return _vendi_dual(u, q) if n > d else _vendi_kernel(u, q)


def vendi(z, labels, *, q: float = 1.0) -> dict:
    """Vendi score of order ``q`` with the cosine kernel.

    Returns ``{"mean": class-averaged score, "per_class": {class: score},
    "all": score of all samples pooled}``.
    """
    qf = _check_q(q)
    x = _embeddings(z, "z")
    y = _labels(labels, x.shape[0], "labels", "z")
    u = _unit_rows(x, "z")
    per_class = {c: _vendi_one(u[y == c], qf) for c in _classes(y)}
    return {
        "mean": float(np.mean(list(per_class.values()))),
        "per_class": per_class,
        "all": _vendi_one(u, qf),
    }


# --------------------------------------------------------------------------
# precision / recall / density / coverage
# --------------------------------------------------------------------------
def _distances(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances ``[len(x), len(y)]`` as prdc's ``compute_pairwise_distance`` gives them (sklearn's
    ``pairwise_distances``), in one thread: prdc's ``n_jobs=8`` only splits ``y`` into chunks, so the values
    agree to the last few ulps, and a joblib start-up per call is what a matched Coverage's 10 x 10 draws
    spent their time on."""
    return pairwise_distances(x, x if y is None else y, metric="euclidean", n_jobs=1)


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (needs len(x) >= k + 1).

    Same value as prdc's ``compute_nearest_neighbour_distances`` (the (k+1)-th
    smallest entry of each distance row, self included), which itself needs
    len(x) >= k + 2.
    """
    dist = _distances(x)
    return np.partition(dist, k, axis=1)[:, k]


def _prdc_from_distances(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """PRDC with prdc's formulas from :func:`_distances`; recall NaN when len(fake) <= k."""
    real_radii = _knn_radii(real, k)
    d_rf = _distances(real, fake)  # [N_real, N_fake]
    inside_real = d_rf < real_radii[:, None]
    if fake.shape[0] > k:
        fake_radii = _knn_radii(fake, k)
        recall = float((d_rf < fake_radii[None, :]).any(axis=1).mean())
    else:
        recall = float("nan")
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": recall,
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((d_rf.min(axis=1) < real_radii).mean()),
    }


def coverage(real, real_labels, fake, fake_labels, *, k: int = 5) -> dict:
    """Precision, recall, density and coverage of ``fake`` w.r.t. ``real``.

    Returns ``{"precision", "recall", "density", "coverage"}`` averaged over the
    classes of ``fake`` (recall as a nan-mean), ``"all"`` with the same four
    keys for all real vs all fake samples, and ``"per_class"``
    ``{class: {four keys}}``.
    """
    k = _check_k(k)
    xr = _embeddings(real, "real")
    yr = _labels(real_labels, xr.shape[0], "real_labels", "real")
    xf = _embeddings(fake, "fake")
    yf = _labels(fake_labels, xf.shape[0], "fake_labels", "fake")
    if xr.shape[1] != xf.shape[1]:
        raise ValueError(
            f"real and fake embeddings must have the same dimension d, got real d={xr.shape[1]} "
            f"and fake d={xf.shape[1]}"
        )
    fake_classes = _classes(yf)
    real_classes = set(_classes(yr))
    missing = [c for c in fake_classes if c not in real_classes]
    if missing:
        raise ValueError(
            f"every class of fake_labels needs real samples; classes {missing} are missing from "
            f"real_labels (which has classes {sorted(real_classes)})"
        )
    too_few = {c: int(np.count_nonzero(yr == c)) for c in fake_classes}
    too_few = {c: n for c, n in too_few.items() if n <= k}
    if too_few:
        raise ValueError(
            f"coverage with k={k} needs at least k + 1 = {k + 1} real samples per class, got "
            + ", ".join(f"class {c}: {n}" for c, n in too_few.items())
        )

    per_class = {c: _prdc_from_distances(xr[yr == c], xf[yf == c], k) for c in fake_classes}
    out: dict[str, Any] = {}
    for key in _PRDC_KEYS:
        vals = [per_class[c][key] for c in fake_classes]
        out[key] = _nanmean(vals) if key == "recall" else float(np.mean(vals))
    out["all"] = _prdc_from_distances(xr, xf, k)
    out["per_class"] = per_class
    return out


def coverage_expectation(n_real: int, n_fake: int, k: int) -> float:
    """Expected Coverage when the ``n_fake`` and ``n_real`` samples come from one distribution (Naeem et al.,
    "Reliable Fidelity and Diversity Metrics for Generative Models", ICML 2020, Lemma 2):
    ``1 - prod_{i=1..k} (N - i) / (N + M - i)``. At N = 500 real and M = 10 synthetic per class with k = 5
    it is only about 0.095, so a raw Coverage reads as a fraction of this."""
    if n_real <= k or n_fake < 1 or k < 1:
        raise ValueError(f"coverage expectation needs n_real > k >= 1 and n_fake >= 1; got {n_real}, {n_fake}, {k}")
    survive = 1.0
    for i in range(1, k + 1):
        survive *= (n_real - i) / (n_real + n_fake - i)
    return 1.0 - survive


def matched_coverage(real, real_labels, fake, fake_labels, *, k: int = 5, draws: int = 10, seed: int = 0) -> dict:
    """Coverage against as many real samples per class as the class has fake ones (M), the mean over ``draws``
    seeded random draws of the real M, so real and fake sets are the same size and the expectation for
    identical distributions no longer depends on how many real samples there are.

    Where M <= k the real k-NN radius is undefined, so k drops to M - 1 for that class (``"k"`` holds the
    smallest used); a class with M = 1 has no matched Coverage (NaN). Returns ``{"coverage", "expected",
    "k", "per_class"}``: ``expected`` is :func:`coverage_expectation` (M, M, k) averaged over the classes."""
    k = _check_k(k)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    xr = _embeddings(real, "real")
    yr = _labels(real_labels, xr.shape[0], "real_labels", "real")
    xf = _embeddings(fake, "fake")
    yf = _labels(fake_labels, xf.shape[0], "fake_labels", "fake")
    rng = np.random.default_rng(seed)
    per_class, expected, used = {}, [], []
    for c in _classes(yf):
        fake_c, real_c = xf[yf == c], xr[yr == c]
        m = len(fake_c)
        if len(real_c) < m:
            raise ValueError(f"class {c}: {len(real_c)} real samples, fewer than its {m} fake ones")
        kc = min(k, m - 1)
        if kc < 1:
            per_class[c] = float("nan")
            continue
        values = []
        for _ in range(draws):
            sample = real_c[rng.choice(len(real_c), size=m, replace=False)]
            values.append(_prdc_from_distances(sample, fake_c, kc)["coverage"])
        per_class[c] = float(np.mean(values))
        expected.append(coverage_expectation(m, m, kc))
        used.append(kc)
    return {"coverage": _nanmean(list(per_class.values())), "expected": float(np.mean(expected)) if expected
            else float("nan"), "k": min(used) if used else 0, "per_class": per_class}  # fmt: skip


# --------------------------------------------------------------------------
# table row
# --------------------------------------------------------------------------
def diversity_metrics(
    fake, fake_labels, real, real_labels, *, k: int = 5, q: float = 1.0, draws: int = 10, seed: int = 0
) -> dict:
    """All metrics of the synthetic set as one flat dict of floats.

    Keys: ``vendi`` (class mean) and ``vendi_all`` of the fake embeddings;
    ``coverage``, ``precision``, ``recall``, ``density`` (class means) and
    ``coverage_all`` of fake w.r.t. real; ``intra_class_cosine`` (class mean)
    of the fake embeddings. So a Coverage can be read against what identical
    distributions give: ``coverage_expected`` is :func:`coverage_expectation`
    (N real, M fake of the class, ``k``) averaged over the fake classes;
    ``coverage_matched`` / ``coverage_matched_expected`` / ``coverage_matched_k``
    are :func:`matched_coverage` (``draws`` real draws of M per class, ``seed``)
    with its expectation and the smallest k it used (below ``k`` where M <= k).
    A class with fewer real than fake samples has no matched Coverage (NaN).
    """
    cov = coverage(real, real_labels, fake, fake_labels, k=k)
    ven = vendi(fake, fake_labels, q=q)
    icc = intra_class_cosine(fake, fake_labels)
    yr = _labels(real_labels, len(real_labels), "real_labels", "real")
    yf = _labels(fake_labels, len(fake_labels), "fake_labels", "fake")
    sizes = {c: (int(np.count_nonzero(yr == c)), int(np.count_nonzero(yf == c))) for c in _classes(yf)}
    expected = float(np.mean([coverage_expectation(n, m, k) for n, m in sizes.values()]))
    if all(n >= m for n, m in sizes.values()):
        matched = matched_coverage(real, real_labels, fake, fake_labels, k=k, draws=draws, seed=seed)
    else:  # e.g. a bank smaller than the set: no real draw of M exists
        matched = {"coverage": float("nan"), "expected": float("nan"), "k": 0}
    return {
        "vendi": ven["mean"],
        "vendi_all": ven["all"],
        "coverage": cov["coverage"],
        "coverage_expected": expected,
        "coverage_matched": matched["coverage"],
        "coverage_matched_expected": matched["expected"],
        "coverage_matched_k": float(matched["k"]),
        "precision": cov["precision"],
        "recall": cov["recall"],
        "density": cov["density"],
        "coverage_all": cov["all"]["coverage"],
        "intra_class_cosine": icc["mean"],
    }
