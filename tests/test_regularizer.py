"""DiRe terms against float64 references written here from the DiRe paper's definitions (WACV 2026), and the
release's arithmetic against the release's own per-class torchmetrics calls."""

import itertools

import pytest
import torch
from torchmetrics.functional import pairwise_cosine_similarity, pairwise_euclidean_distance

from dire.regularizer import DiRe, RealBank, batched_terms, class_terms


def reference_terms(z, r):
    """Exact definitions, float64, plain loops."""
    z, r = z.double(), r.double()
    n, m = len(z), len(r)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    cd = sum(cos(z[i], z[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1)) if n > 1 else 0.0
    cdm = sum(1 - cos(z[i], r[j]) for i in range(n) for j in range(m)) / (n * m)
    edm = sum(float((z[i] - r[j]).norm()) for i in range(n) for j in range(m)) / (n * m)
    return {"cd": cd, "cdm": cdm, "edm": edm}


def release_terms(z, r):
    """The release's per-class arithmetic (torchmetrics, zero_diagonal=True)."""
    a = pairwise_cosine_similarity(z, zero_diagonal=True)
    b = pairwise_euclidean_distance(z, r, zero_diagonal=True)
    c = 1 - pairwise_cosine_similarity(z, r, zero_diagonal=True)
    return {"cd": a.abs().mean(), "cdm": c.abs().mean(), "edm": b.mean()}


@pytest.mark.parametrize("n,m,d", [(1, 5, 4), (2, 3, 5), (5, 7, 3), (6, 4, 8), (10, 10, 16)])
def test_class_terms_match_float64_reference(n, m, d):
    g = torch.Generator().manual_seed(n * 100 + m)
    z, r = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g) + 0.5
    got = class_terms(z.double(), r.double())
    want = reference_terms(z, r)
    for key in want:
        assert float(got[key]) == pytest.approx(want[key], rel=1e-10, abs=1e-12), key
    got32 = class_terms(z, r)
    for key in want:
        assert float(got32[key]) == pytest.approx(want[key], rel=1e-4, abs=1e-5), key


def test_single_image_has_zero_diversity_term():
    z, r = torch.randn(1, 6), torch.randn(4, 6)
    assert float(class_terms(z, r)["cd"]) == 0.0
    assert float(class_terms(z, r, official=True)["cd"]) == 0.0


def test_hand_values():
    # two orthogonal unit vectors: CD 0; r = z: CDM = mean(1 - cos) over the 2x2 grid = 0.5; EDM = mean(0, √2, √2, 0)
    z = torch.eye(2, dtype=torch.float64)
    t = class_terms(z, z.clone())
    assert float(t["cd"]) == 0.0 and float(t["cdm"]) == pytest.approx(0.5)
    assert float(t["edm"]) == pytest.approx(2**0.5 / 2)
    # official zeroes the (i, i) entries: CDM = mean(1, 1, 1, 1) = 1; EDM = mean(0, √2, √2, 0) unchanged
    o = class_terms(z, z.clone(), official=True)
    assert float(o["cdm"]) == pytest.approx(1.0) and float(o["edm"]) == pytest.approx(2**0.5 / 2)


@pytest.mark.parametrize("n,m", [(1, 5), (4, 3), (5, 9), (10, 500)])
def test_official_matches_release_arithmetic(n, m):
    g = torch.Generator().manual_seed(n + m)
    # post-ReLU-like embeddings (non-negative), as the release's avgpool features are
    z, r = torch.rand(n, 32, generator=g, dtype=torch.float64), torch.rand(m, 32, generator=g, dtype=torch.float64)
    got, want = class_terms(z, r, official=True), release_terms(z, r)
    for key in want:
        assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-9), key


def test_official_cd_is_exact_times_n_minus_1_over_n_for_nonnegative_embeddings():
    z, r = torch.rand(7, 12, dtype=torch.float64), torch.rand(9, 12, dtype=torch.float64)
    assert float(class_terms(z, r, official=True)["cd"]) == pytest.approx(float(class_terms(z, r)["cd"]) * 6 / 7)


def _batch(seed=0, classes=(0, 3, 5), sizes=(3, 1, 4), d=8, m=(6, 2, 5)):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), c) for c, s in zip(classes, sizes)])
    labels = labels[torch.randperm(len(labels), generator=g)]  # classes interleaved in the batch
    z = torch.randn(len(labels), d, generator=g, dtype=torch.float64)
    real = {c: torch.randn(k, d, generator=g, dtype=torch.float64) for c, k in zip(classes, m)}
    real[7] = torch.randn(4, d, generator=g, dtype=torch.float64)  # a class not in the batch
    return z, labels, real


@pytest.mark.parametrize("official", [False, True])
def test_module_equals_weighted_sum_of_class_terms(official):
    z, labels, real = _batch()
    reg = DiRe(r_c=0.7, r_e=0.03, weight=0.2, official=official)
    want = 0.0
    for c in labels.unique().tolist():
        t = class_terms(z[labels == c], real[c], official=official)
        want += 0.7 * float(t["cd"] + t["cdm"]) + 0.03 * float(t["edm"])
    assert float(reg(z, labels, real)) == pytest.approx(0.2 * want, rel=1e-10)
    # a RealBank gives the same value as the dict
    assert float(reg(z, labels, RealBank.from_dict(real))) == pytest.approx(0.2 * want, rel=1e-10)


def test_term_switches_and_defaults():
    z, labels, real = _batch(1)
    reg = DiRe()
    assert (reg.r_c, reg.r_e, reg.weight, reg.official) == (1.0, 0.01, 0.1, False)
    parts = {t: float(DiRe(terms=(t,))(z, labels, real)) for t in ("cd", "cdm", "edm")}
    assert float(reg(z, labels, real)) == pytest.approx(sum(parts.values()), rel=1e-10)
    terms = batched_terms(z, labels, RealBank.from_dict(real))
    assert parts["edm"] == pytest.approx(0.1 * 0.01 * float(terms["edm"].sum()), rel=1e-10)
    assert float(DiRe(terms=())(z, labels, real)) == 0.0
    with pytest.raises(ValueError, match="unknown DiRe terms"):
        DiRe(terms=("cd", "dpp"))


def test_gradient_pushes_same_class_embeddings_apart():
    z = torch.tensor([[1.0, 0.1], [1.0, -0.1]], requires_grad=True)
    DiRe(terms=("cd",))(z, torch.zeros(2, dtype=torch.long), {0: torch.randn(3, 2)}).backward()
    # one step of gradient descent lowers their cosine similarity
    z2 = (z - 0.5 * z.grad).detach()
    assert torch.cosine_similarity(z2[0], z2[1], dim=0) < torch.cosine_similarity(z[0], z[1], dim=0)


def test_gradcheck_float64():
    z, labels, real = _batch(2, d=5)
    bank = RealBank.from_dict(real)
    for official in (False, True):
        f = lambda x, official=official: DiRe(official=official)(x, labels, bank)
        assert torch.autograd.gradcheck(f, (z.clone().requires_grad_(),))


def test_no_nan_when_synthetic_equals_real():
    # real-image init (DWA, DELT) puts synthetic embeddings exactly on bank entries
    r = torch.rand(4, 6)
    z = r[:2].clone().requires_grad_()
    loss = DiRe()(z, torch.zeros(2, dtype=torch.long), {0: r})
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_bad_inputs_have_clear_errors():
    reg = DiRe()
    with pytest.raises(ValueError, match=r"z \[N, d\] and labels \[N\]"):
        reg(torch.randn(4, 3), torch.zeros(3, dtype=torch.long), {0: torch.randn(2, 3)})
    with pytest.raises(ValueError, match="no real embeddings for classes \\[1\\]"):
        reg(torch.randn(2, 3), torch.tensor([0, 1]), {0: torch.randn(2, 3)})
    with pytest.raises(ValueError, match="5-d but the real bank is 3-d"):
        reg(torch.randn(2, 5), torch.tensor([0, 0]), {0: torch.randn(2, 3)})
    with pytest.raises(ValueError, match="n, m >= 1"):
        class_terms(torch.randn(0, 3), torch.randn(2, 3))


def test_a_dict_bank_is_built_once_and_rebuilt_only_when_it_changes(monkeypatch):
    g = torch.Generator().manual_seed(0)
    real = {c: torch.rand(7, 5, generator=g, dtype=torch.float64) for c in range(3)}
    z = torch.rand(6, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    builds = []
    original = RealBank.from_dict.__func__
    monkeypatch.setattr(
        RealBank, "from_dict", classmethod(lambda cls, *a, **k: builds.append(1) or original(cls, *a, **k))
    )
    reg = DiRe()
    first = [reg(z, labels, real) for _ in range(3)]
    assert len(builds) == 1 and all(torch.equal(v, first[0]) for v in first)
    assert torch.allclose(first[0], DiRe()(z, labels, original(RealBank, real)), rtol=0, atol=1e-12)
    real[1].mul_(2.0)  # changed in place: the cached bank would be stale
    changed = reg(z, labels, real)
    assert len(builds) == 2  # rebuilt
    assert torch.allclose(changed, DiRe()(z, labels, original(RealBank, real)), rtol=0, atol=1e-12)
    reg(z, labels, real)
    assert len(builds) == 2  # unchanged since: reused
    reg(z, labels, dict(real))  # another dict object with the same tensors
    assert len(builds) == 3
