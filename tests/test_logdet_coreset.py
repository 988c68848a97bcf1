"""The two terms beyond the paper: the log-det (DPP) diversity term against a float64 numpy reference and
hand-derived values, and the k-means EDM coreset against the exact EDM."""

import math

import numpy as np
import pytest
import torch

from dire.regularizer import DiRe, RealBank, batched_terms, class_terms


def reference_logdet(z, eps):
    """-(1/n)[log det(K + εI) - n log(1 + ε)] with K the cosine kernel, in numpy float64."""
    z = z.double().numpy()
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(u)
    sign, logdet = np.linalg.slogdet(u @ u.T + eps * np.eye(n))
    assert sign > 0
    return -(logdet - n * math.log1p(eps)) / n


@pytest.mark.parametrize("n,d,eps", [(2, 3, 0.1), (5, 8, 0.1), (10, 4, 0.01), (7, 16, 1.0)])
def test_logdet_matches_float64_reference(n, d, eps):
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(n * d))
    got = class_terms(z.double(), torch.randn(3, d, dtype=torch.float64), logdet_eps=eps)["logdet"]
    assert float(got) == pytest.approx(reference_logdet(z, eps), rel=1e-10)
    got32 = class_terms(z, torch.randn(3, d), logdet_eps=eps)["logdet"]
    assert float(got32) == pytest.approx(reference_logdet(z, eps), rel=1e-4, abs=1e-6)


def test_logdet_hand_values():
    eps, r = 0.1, torch.randn(2, 4, dtype=torch.float64)
    # orthogonal embeddings: det(K + εI) = (1 + ε)^n, LD = 0 (its minimum, by Hadamard's inequality)
    assert float(class_terms(torch.eye(4, dtype=torch.float64) * 3, r, logdet_eps=eps)["logdet"]) == pytest.approx(
        0, abs=1e-12
    )
    # one embedding: LD = 0
    assert float(class_terms(torch.ones(1, 4, dtype=torch.float64), r, logdet_eps=eps)["logdet"]) == pytest.approx(
        0, abs=1e-12
    )
    # n coinciding embeddings: K = 11ᵀ, det(K + εI) = (n + ε) ε^(n-1)
    n = 5
    z = torch.ones(n, 4, dtype=torch.float64)
    want = -(math.log(n + eps) + (n - 1) * math.log(eps) - n * math.log1p(eps)) / n
    assert float(class_terms(z, r, logdet_eps=eps)["logdet"]) == pytest.approx(want, rel=1e-10)
    # LD is never negative
    for seed in range(5):
        z = torch.randn(6, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert float(class_terms(z, r[:, :3], logdet_eps=eps)["logdet"]) >= -1e-12


def test_logdet_batched_over_classes_equals_per_class():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([2, 0, 2, 2, 5, 0, 2, 5, 5, 5, 9])  # sizes 2, 4, 4, 1 interleaved
    z = torch.randn(len(labels), 6, generator=g, dtype=torch.float64)
    bank = RealBank.from_dict({c: torch.randn(3, 6, generator=g, dtype=torch.float64) for c in (0, 2, 5, 9)})
    got = batched_terms(z, labels, bank, terms=("logdet",), logdet_eps=0.2)
    for k, c in enumerate(got["classes"].tolist()):
        want = reference_logdet(z[labels == c], 0.2) if (labels == c).sum() > 1 else 0.0
        assert float(got["logdet"][k]) == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_logdet_gradcheck_and_no_nan_when_embeddings_coincide():
    labels = torch.tensor([0, 0, 0, 1, 1])
    bank = RealBank.from_dict({0: torch.randn(3, 4, dtype=torch.float64), 1: torch.randn(2, 4, dtype=torch.float64)})
    reg = DiRe(terms=("logdet", "cdm", "edm"), logdet_eps=0.1)
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: reg(x, labels, bank), (z,))
    same = torch.ones(5, 4, requires_grad=True)  # every embedding identical: K singular, K + εI is not
    loss = DiRe(terms=("logdet",))(same, labels, bank)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(same.grad).all()


def test_logdet_descent_spreads_a_class_and_module_weights():
    labels = torch.zeros(3, dtype=torch.long)
    bank = {0: torch.randn(4, 3)}
    z = torch.tensor([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0], [1.0, 0.0, 0.1]], requires_grad=True)
    DiRe(terms=("logdet",))(z, labels, bank).backward()
    z2 = (z - 0.5 * z.grad).detach()
    assert float(class_terms(z2, bank[0])["logdet"]) < float(class_terms(z.detach(), bank[0])["logdet"])
    # logdet sits under r_c, beside CDM, and the whole under w
    t = class_terms(z.detach(), bank[0])
    got = DiRe(r_c=0.5, r_e=0.2, weight=0.3, terms=("logdet", "cdm", "edm"))(z.detach(), labels, bank)
    assert float(got) == pytest.approx(0.3 * (0.5 * float(t["logdet"] + t["cdm"]) + 0.2 * float(t["edm"])), rel=1e-5)
    with pytest.raises(ValueError, match="logdet_eps must be > 0"):
        DiRe(terms=("logdet",), logdet_eps=0)


def _real(classes=3, m=60, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a few clusters per class, so k-means has structure to find
    return {
        c: torch.randn(m, d, generator=g, dtype=torch.float64)
        + 3 * torch.randn(1, d, generator=g, dtype=torch.float64) * (torch.arange(m) % 4)[:, None]
        for c in range(classes)
    }


def test_coreset_with_k_at_least_m_is_exact_and_keeps_counts():
    real = _real(m=8)
    bank = RealBank.from_dict(real)
    core = bank.coreset(8)
    assert torch.equal(core.weight.sum(1), bank.count.double())
    z = torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    exact, approx = batched_terms(z, labels, bank), batched_terms(z, labels, core)
    for t in ("cd", "cdm", "edm"):
        assert torch.allclose(exact[t], approx[t], rtol=1e-12), t


def test_coreset_edm_bounds_tighten_and_cosine_terms_stay_exact():
    bank = RealBank.from_dict(_real())
    z = torch.randn(9, 5, dtype=torch.float64) * 2
    labels = torch.arange(9) % 3
    exact = batched_terms(z, labels, bank)
    errors = {True: [], False: []}
    for k in (1, 4, 16, 60):
        for spread in (False, True):
            core = bank.coreset(k, spread=spread)
            assert torch.allclose(core.weight.sum(1), bank.count.double())  # every real embedding counted once
            got = batched_terms(z, labels, core)
            assert torch.allclose(got["cdm"], exact["cdm"]) and torch.allclose(got["cd"], exact["cd"])
            # Jensen: ||z - mean|| <= mean ||z - r|| <= sqrt(mean ||z - r||²) = sqrt(||z - mean||² + s²)
            if spread:
                assert (got["edm"] >= exact["edm"] - 1e-12).all()
            else:
                assert (got["edm"] <= exact["edm"] + 1e-12).all()
            errors[spread].append(float(((exact["edm"] - got["edm"]).abs() / exact["edm"]).max()))
    for spread, errs in errors.items():
        assert errs[0] > errs[1] > errs[2] and errs[3] == pytest.approx(0, abs=1e-12), (spread, errs)
    # one centre with its spread is the class's RMS distance, by hand
    core = bank.coreset(1)
    r0, z0 = bank.as_dict()[0], z[labels == 0]
    rms = torch.cdist(z0, r0).pow(2).mean(1).sqrt().mean()
    assert float(batched_terms(z, labels, core)["edm"][0]) == pytest.approx(float(rms), rel=1e-10)


def test_coreset_gradcheck_and_module_option():
    bank = RealBank.from_dict(_real(m=20))
    core = bank.coreset(5)
    labels = torch.tensor([0, 0, 1, 2, 2])
    z = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: batched_terms(x, labels, core, terms=("edm",))["edm"].sum(), (z,))
    # DiRe(edm_coreset=k) equals the terms on bank.coreset(k)
    want = batched_terms(z.detach(), labels, core)
    got = DiRe(edm_coreset=5, r_c=1.0, r_e=1.0, weight=1.0)(z.detach(), labels, bank)
    assert float(got) == pytest.approx(float(want["cd"].sum() + want["cdm"].sum() + want["edm"].sum()), rel=1e-10)
    with pytest.raises(ValueError, match="official=False"):
        DiRe(edm_coreset=5, official=True)
    with pytest.raises(ValueError, match="coreset bank"):
        batched_terms(z.detach(), labels, core, official=True)
    with pytest.raises(ValueError, match=">= 1 centre"):
        bank.coreset(0)
