"""DiRe: the diversity regulariser on penultimate-layer embeddings.

For one class c, with Z_c the n synthetic embeddings and R_c the m real ones
(Mohanty, Reddy, Mopuri, "DiRe: Diversity-promoting Regularization for Dataset
Condensation", WACV 2026, Eq. of the objective; code: DIL-IITH/DiRe):

    CD_c  = mean_{i != j} cos(z_i, z_j)          (0 when n = 1)
    CDM_c = mean_{i, j}   1 - cos(z_i, r_j)
    EDM_c = mean_{i, j}   ||z_i - r_j||_2

    DiRe  = weight * sum_c [ r_c * (CD_c + CDM_c) + r_e * EDM_c ]

``official=True`` reproduces the release's arithmetic instead (torchmetrics
``pairwise_*`` with ``zero_diagonal=True``): CD is the mean of |cos| over all n²
entries with the diagonal zeroed (exact CD × (n-1)/n when cosines are >= 0); CDM and
EDM zero the (i, i) entries, i < min(n, m), *before* taking 1 - cos and the square
root, then average over all n·m entries.

All classes of a batch are computed together (padded per-class tensors, batched
matmuls), with closed forms where they exist:
``sum_{i != j} cos = ||sum_i ẑ_i||² - n`` and ``mean_{i,j} cos(z_i, r_j) = mean_i ẑ_i · mean_j r̂_j``.
EDM (a mean of norms) has no closed form: it uses one batched distance matrix.

Two terms beyond the paper (its open questions):

* ``"logdet"``, a DPP-style alternative to CD. With K_c = Ẑ_c Ẑ_cᵀ the n × n cosine kernel of the class's
  synthetic embeddings,

      LD_c = -(1/n) [log det(K_c + εI) - n log(1 + ε)]

  By Hadamard's inequality det(K + εI) <= (1 + ε)^n, so LD_c >= 0, with 0 exactly when the n embeddings are
  pairwise orthogonal; it grows as they span less volume (log det is the log squared volume of the set, the
  DPP log-likelihood). CD only sees pairs, so n embeddings on a low-dimensional subspace with small pairwise
  cosines still score well; LD penalises any near-linear dependence. The ridge ε (default 0.1) keeps K + εI
  positive definite (smallest eigenvalue >= ε), so the Cholesky factor exists and the term stays finite when
  embeddings coincide: LD_c <= log((1 + ε)/ε), |∂LD/∂K| <= 1/(nε). Dividing by n puts it per image, on CD's
  scale (for 10 embeddings at pairwise cosine 0.6, LD = 0.53 and CD = 0.6). It takes CD's place under r_c.
* An EDM coreset (:meth:`RealBank.coreset`): k-means centres μ_k of each class's real embeddings, weighted by
  their cluster sizes w_k and carrying their clusters' mean squared radii s_k²:
  EDM_c ≈ Σ_i Σ_k w_k sqrt(||z_i - μ_k||² + s_k²) / (n Σ_k w_k), each term the cluster's root-mean-square
  distance to z_i (an upper bound on its mean distance; without s_k², a lower bound). Exact when k = m.
  The s_k² only add to the bank's squared norms, so the cost is that of k real embeddings per class;
  ``benchmarks/edm_coreset.py`` measures the error and speed-up. CD and CDM stay exact (their closed forms
  need only the per-class mean of the real unit vectors, which the coreset keeps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

TERMS = ("cd", "cdm", "edm")  # the paper's terms, the default
ALL_TERMS = TERMS + ("logdet",)  # with the log-det (DPP) alternative to CD


@dataclass
class RealBank:
    """Real embeddings per class, padded into one tensor, with cached per-class sums.

    ``emb`` [C, m_max, d] (rows past ``count[c]`` are zero), ``count`` [C],
    ``sq_norm`` [C, m_max] = ||r||² (+ s², a coreset cluster's mean squared radius), ``unit_mean`` [C, d] = mean_j r̂_j.
    Classes absent from the source get count 0 and are rejected when used.
    ``weight`` [C, m_max] (a coreset's cluster sizes) weights each row in EDM; None = every row counts once.
    """

    emb: torch.Tensor
    count: torch.Tensor
    sq_norm: torch.Tensor
    unit_mean: torch.Tensor
    classes: tuple[int, ...]
    weight: torch.Tensor | None = None
    _selection: tuple[torch.Tensor, RealBank] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, real: Mapping[int, torch.Tensor], *, num_classes: int | None = None) -> RealBank:
        if not real:
            raise ValueError("real embedding bank is empty; expected a dict class -> [m, d] tensor")
        tensors = {int(c): torch.as_tensor(r) for c, r in real.items()}
        dims = {t.shape[-1] for t in tensors.values()}
        if any(t.dim() != 2 or len(t) == 0 for t in tensors.values()) or len(dims) != 1:
            shapes = {c: tuple(t.shape) for c, t in tensors.items()}
            raise ValueError(
                f"expected each class's real embeddings as a non-empty [m, d] tensor with one d; got {shapes}"
            )
        num_classes = num_classes or max(tensors) + 1
        m_max, d = max(len(t) for t in tensors.values()), dims.pop()
        ref = next(iter(tensors.values()))
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        emb = ref.new_zeros(num_classes, m_max, d, dtype=dtype)
        count = torch.zeros(num_classes, dtype=torch.long, device=ref.device)
        for c, t in tensors.items():
            emb[c, : len(t)] = t.to(dtype)
            count[c] = len(t)
        return cls.from_padded(emb, count)

    @classmethod
    def from_padded(cls, emb: torch.Tensor, count: torch.Tensor) -> RealBank:
        valid = torch.arange(emb.shape[1], device=emb.device)[None, :] < count[:, None]
        unit = F.normalize(emb, dim=-1) * valid[..., None]
        unit_mean = unit.sum(1) / count.clamp(min=1)[:, None]
        present = tuple(int(c) for c in torch.nonzero(count).flatten())
        return cls(emb, count, (emb * emb).sum(-1), unit_mean, present)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> RealBank:
        cast = lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() and dtype else t.dtype)  # noqa: E731
        return RealBank(
            cast(self.emb),
            self.count.to(device),
            cast(self.sq_norm),
            cast(self.unit_mean),
            self.classes,
            None if self.weight is None else cast(self.weight),
        )

    def select(self, classes: torch.Tensor) -> RealBank:
        """The bank restricted to ``classes`` (row k = class ``classes[k]``).

        The last selection is kept: a synthesis unit uses the same classes for all
        its iterations, so the gather (tens of MB at CIFAR-100 scale) happens once.
        """
        cached = self._selection
        if cached is not None and cached[0].shape == classes.shape and torch.equal(cached[0], classes):
            return cached[1]
        sub = RealBank(
            self.emb[classes],
            self.count[classes],
            self.sq_norm[classes],
            self.unit_mean[classes],
            tuple(range(len(classes))),
            None if self.weight is None else self.weight[classes],
        )
        self._selection = (classes.clone(), sub)
        return sub

    def coreset(self, k: int, *, seed: int = 0, spread: bool = True) -> RealBank:
        """A bank of at most ``k`` k-means centres per class (scikit-learn ``KMeans``, one seeded init),
        weighted by their cluster sizes, for an approximate, cheaper EDM; ``unit_mean`` stays the exact one,
        so CD and CDM are unchanged. A class with at most ``k`` embeddings keeps them as they are.

        ``spread=True`` also keeps each cluster's mean squared radius s² (added to ``sq_norm``), so a centre
        contributes sqrt(||z - μ||² + s²), the cluster's root-mean-square distance to z (exact, since
        mean_j ||z - r_j||² = ||z - μ||² + s²). By Jensen that is an upper bound on the cluster's mean distance
        (the plain centre distance, ``spread=False``, is a lower bound), and a tight one in high dimensions,
        where distances from z to a cluster's points concentrate."""
        from sklearn.cluster import KMeans

        if k < 1:
            raise ValueError(f"coreset size must be >= 1 centre per class; got {k}")
        if self.weight is not None:
            raise ValueError("this bank is already a coreset; build the coreset from the full bank")
        C, d = self.emb.shape[0], self.emb.shape[-1]
        k_max = min(k, int(self.count.max()))
        emb, weight, radius2 = (
            self.emb.new_zeros(C, k_max, d),
            self.emb.new_zeros(C, k_max),
            self.emb.new_zeros(C, k_max),
        )
        count = torch.zeros_like(self.count)
        for c in self.classes:
            real = self.emb[c, : self.count[c]]
            assign = torch.arange(len(real), device=real.device)
            if len(real) > k:
                fit = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(real.detach().cpu().double().numpy())
                assign = torch.as_tensor(fit.labels_, device=real.device)
            used, assign = torch.unique(assign, return_inverse=True)  # KMeans can leave a cluster empty
            sizes = torch.bincount(assign, minlength=len(used)).to(real)
            centres = real.new_zeros(len(used), d).index_add(0, assign, real) / sizes[:, None]
            sq_dev = ((real - centres[assign]) ** 2).sum(1)
            emb[c, : len(used)], weight[c, : len(used)], count[c] = centres, sizes, len(used)
            radius2[c, : len(used)] = real.new_zeros(len(used)).index_add(0, assign, sq_dev) / sizes
        sq_norm = (emb * emb).sum(-1) + (radius2 if spread else 0)
        return RealBank(emb, count, sq_norm, self.unit_mean.clone(), self.classes, weight)

    def as_dict(self) -> dict[int, torch.Tensor]:
        return {c: self.emb[c, : self.count[c]] for c in self.classes}


# On the CPU the distance GEMM and the gradient GEMM both stream the real embeddings (50 MB at CIFAR-100's
# 50 x 500 x 512), which makes the step memory-bound; taking the classes in chunks of about this many bytes
# keeps a chunk's embeddings in cache from the first GEMM to the second, so they come from memory once.
# A GPU takes every class at once (fewer kernel launches).
CPU_CHUNK_BYTES = 4 << 20


class _DistanceSum(torch.autograd.Function):
    """Per-class sum of s_ij ||z_i - r_j|| (s: 0/1 for kept pairs, or a coreset's cluster sizes), with its
    gradient computed in the same pass: ``d/dz_i sum_j s_ij ||z_i - r_j|| = sum_j s_ij (z_i - r_j) / ||z_i - r_j||``.

    One batched GEMM for the distances and one for the gradient, per chunk of classes (:data:`CPU_CHUNK_BYTES`);
    backward only scales the stored gradient by each class's incoming gradient. Pairs at distance 0 (a synthetic
    embedding on a real one, e.g. after real init) count 0 with gradient 0 rather than NaN.
    """

    @staticmethod
    def forward(ctx, Zp: torch.Tensor, R: torch.Tensor, r_sq: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        K = len(Zp)
        step = K
        if Zp.device.type == "cpu":
            step = max(1, CPU_CHUNK_BYTES // max(1, R[0].numel() * R.element_size()))
        want_grad = ctx.needs_input_grad[0]
        total = Zp.new_empty(K)
        grad = torch.empty_like(Zp) if want_grad else None
        z_sq = (Zp * Zp).sum(-1, keepdim=True)
        for a in range(0, K, step):
            Zc, Rc, b = Zp[a : a + step], R[a : a + step], slice(a, a + step)
            # bmm then in-place adds: faster than baddbmm for these skinny shapes on MKL (measured)
            sq = torch.bmm(Zc, Rc.transpose(1, 2)).mul_(-2).add_(z_sq[b]).add_(r_sq[b])
            s = torch.where(sq > 0, scale[b], 0.0)
            dist = sq.clamp_min_(0).sqrt_()
            total[b] = (dist * s).sum((1, 2))
            if want_grad:
                w = s.div_(torch.where(s != 0, dist, 1.0))
                torch.bmm(w, Rc, out=grad[b]).neg_().add_(w.sum(-1, keepdim=True) * Zc)
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_total[:, None, None] * grad, None, None, None


def _group(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classes present, each sample's class slot, its position within its class, class sizes."""
    classes, slot = torch.unique(labels, return_inverse=True)
    sizes = torch.bincount(slot, minlength=len(classes))
    order = torch.argsort(slot, stable=True)
    starts = torch.cumsum(sizes, 0) - sizes
    pos = torch.empty_like(slot)
    pos[order] = torch.arange(len(slot), device=labels.device) - starts[slot[order]]
    return classes, slot, pos, sizes


def _pad(x: torch.Tensor, slot: torch.Tensor, pos: torch.Tensor, classes: int, n_max: int) -> torch.Tensor:
    """Rows of ``x`` placed per class: [K, n_max, d], zero where a class has fewer rows."""
    return x.new_zeros(classes, n_max, x.shape[1]).index_put((slot, pos), x)


def batched_terms(
    z: torch.Tensor,
    labels: torch.Tensor,
    bank: RealBank,
    *,
    official: bool = False,
    terms: Sequence[str] = TERMS,
    logdet_eps: float = 0.1,
) -> dict[str, torch.Tensor]:
    """Per-class CD, CDM, EDM and LD (``"logdet"``) for every class present in ``labels``.

    Returns ``{"classes": [K], "cd": [K], "cdm": [K], "edm": [K], "logdet": [K]}`` (only the requested terms).
    """
    if z.dim() != 2 or labels.shape != (len(z),):
        raise ValueError(f"expected z [N, d] and labels [N]; got z {tuple(z.shape)} and labels {tuple(labels.shape)}")
    if bank.emb.shape[-1] != z.shape[1]:
        raise ValueError(
            f"synthetic embeddings are {z.shape[1]}-d but the real bank is {bank.emb.shape[-1]}-d; "
            "build the bank with the same network and layer"
        )
    _check_terms(terms)
    if official and bank.weight is not None and "edm" in terms:
        raise ValueError(
            "official=True pairs the i-th synthetic with the i-th real embedding, which a coreset bank "
            "does not have; use official=False with an EDM coreset"
        )
    if bank.emb.device != z.device or bank.emb.dtype != z.dtype:
        bank = bank.to(z.device, z.dtype)
    classes, slot, pos, n = _group(labels)
    if (classes >= len(bank.count)).any() or (bank.count[classes.clamp(max=len(bank.count) - 1)] == 0).any():
        missing = [int(c) for c in classes if c >= len(bank.count) or bank.count[c] == 0]
        raise ValueError(f"no real embeddings for classes {missing}; the bank has classes {list(bank.classes)}")
    sub = bank.select(classes)
    m = sub.count
    nf, mf = n.to(z.dtype), m.to(z.dtype)
    zhat = F.normalize(z, dim=-1)
    out: dict[str, torch.Tensor] = {"classes": classes}
    # the (i, i) pairs that the release zeroes: i-th synthetic vs i-th real of the class
    diag = pos < m[slot]

    if "cd" in terms:
        if official:
            Zh = _pad(zhat, slot, pos, len(classes), int(n.max()))
            cos = torch.bmm(Zh, Zh.transpose(1, 2))
            cos = cos - torch.diag_embed(torch.diagonal(cos, dim1=1, dim2=2))
            out["cd"] = cos.abs().sum((1, 2)) / (nf * nf)
        else:
            s = zhat.new_zeros(len(classes), z.shape[1]).index_add(0, slot, zhat)
            pairs = (nf * (nf - 1)).clamp(min=1)
            out["cd"] = torch.where(n > 1, ((s * s).sum(1) - nf) / pairs, torch.zeros_like(nf))

    if "cdm" in terms:
        mu = sub.unit_mean  # mean_j r̂_j per class
        dots = (zhat * mu[slot]).sum(1)  # mean_j cos(z_i, r_j) per sample
        mean_cos = zhat.new_zeros(len(classes)).index_add(0, slot, dots) / nf
        if official:
            # zeroed (i, i) entries count as cos = 0, i.e. 1 - cos = 1 (>= 0, so |.| is a no-op)
            r_diag = F.normalize(sub.emb[slot, pos.clamp(max=sub.emb.shape[1] - 1)], dim=-1)
            cos_ii = torch.where(diag, (zhat * r_diag).sum(1), torch.zeros_like(dots))
            removed = zhat.new_zeros(len(classes)).index_add(0, slot, cos_ii) / (nf * mf)
            out["cdm"] = 1 - mean_cos + removed
        else:
            out["cdm"] = 1 - mean_cos

    if "edm" in terms:
        n_max, m_max = int(n.max()), int(m.max())
        Zp = _pad(z, slot, pos, len(classes), n_max)
        ar_n, ar_m = torch.arange(n_max, device=z.device), torch.arange(m_max, device=z.device)
        keep = (ar_n[None, :, None] < n[:, None, None]) & (ar_m[None, None, :] < m[:, None, None])
        if official:
            keep = keep & (ar_n[None, :, None] != ar_m[None, None, :])
        scale, mass = keep.to(z.dtype), mf
        if sub.weight is not None:  # a coreset: each centre stands for its cluster's embeddings
            scale, mass = scale * sub.weight[:, None, :m_max], sub.weight.sum(1)
        total = _DistanceSum.apply(Zp, sub.emb[:, :m_max], sub.sq_norm[:, None, :m_max], scale)
        out["edm"] = total / (nf * mass)

    if "logdet" in terms:
        _check_logdet_eps(logdet_eps)
        n_max = int(n.max())
        Zh = _pad(zhat, slot, pos, len(classes), n_max).double()  # float64: the Cholesky of n × n is cheap
        pad = torch.arange(n_max, device=z.device)[None, :] >= n[:, None]
        # padded rows get K_ii + ε = 1 + ε and no off-diagonal entries: each adds exactly log(1 + ε), removed below
        A = torch.bmm(Zh, Zh.transpose(1, 2)) + torch.diag_embed(logdet_eps + pad.double())
        L, info = torch.linalg.cholesky_ex(A)
        if bool((info != 0).any()):  # cannot happen for K PSD and ε > 0 unless the input has NaN or inf
            raise ValueError("log-det term: K + εI is not positive definite; check the embeddings for NaN or inf")
        logdet = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)
        out["logdet"] = (-(logdet - n_max * math.log1p(logdet_eps)) / n.double()).to(z.dtype)
    return out


def _check_logdet_eps(eps: float) -> None:
    if eps <= 0:
        raise ValueError(f"logdet_eps must be > 0 (it keeps K + εI positive definite); got {eps}")


def _check_terms(terms: Sequence[str]) -> None:
    unknown = [t for t in terms if t not in ALL_TERMS]
    if unknown:
        raise ValueError(f"unknown DiRe terms {unknown}; expected a subset of {ALL_TERMS}")


def class_terms(
    z: torch.Tensor, r: torch.Tensor, *, official: bool = False, logdet_eps: float = 0.1
) -> dict[str, torch.Tensor]:
    """CD, CDM, EDM and LD of one class: ``z`` [n, d] synthetic, ``r`` [m, d] real embeddings.

    Returns scalar tensors under ``"cd"``, ``"cdm"``, ``"edm"``, ``"logdet"``; with n = 1 CD and LD are 0.
    """
    if z.dim() != 2 or r.dim() != 2 or z.shape[1] != r.shape[1] or len(z) == 0 or len(r) == 0:
        raise ValueError(
            f"expected z [n, d] and r [m, d] with n, m >= 1 and one d; got {tuple(z.shape)} and {tuple(r.shape)}"
        )
    bank = RealBank.from_dict({0: r.to(z.device, z.dtype)})
    terms = batched_terms(
        z,
        torch.zeros(len(z), dtype=torch.long, device=z.device),
        bank,
        official=official,
        terms=ALL_TERMS,
        logdet_eps=logdet_eps,
    )
    return {t: terms[t][0] for t in ALL_TERMS}


class DiRe(nn.Module):
    """``weight * Σ_c [r_c * (CD_c + CDM_c) + r_e * EDM_c]`` over the classes of a batch
    (``r_c * LD_c`` in CD's place or beside it when ``"logdet"`` is among the terms).

    Args:
        r_c: weight of the cosine terms, CD, CDM and LD (release: 1.0).
        r_e: weight of the Euclidean anchor term (release: 0.01).
        weight: overall multiplier ``w`` (release: 0.1).
        official: use the release's diagonal arithmetic instead of the exact definition.
        terms: which of ``("cd", "cdm", "edm", "logdet")`` are on (default the paper's three); the ablation
            switches them.
        logdet_eps: the ridge ε of the log-det term (see the module docstring).
        edm_coreset: EDM against at most this many k-means centres per class (weighted by cluster size)
            instead of every real embedding; None = exact. Built once per bank (seed 0) and kept.

    ``forward(z, labels, real)``: synthetic embeddings [N, d], their labels [N], and
    the real embeddings as a :class:`RealBank` or a dict class -> [m, d] tensor. A dict is
    padded into a bank once and the bank reused while the dict is unchanged (the same dict
    holding the same tensors, none modified in place), so both forms cost the same per step.
    """

    def __init__(
        self,
        r_c: float = 1.0,
        r_e: float = 0.01,
        weight: float = 0.1,
        official: bool = False,
        terms: Sequence[str] = TERMS,
        logdet_eps: float = 0.1,
        edm_coreset: int | None = None,
    ):
        super().__init__()
        _check_terms(terms)
        _check_logdet_eps(logdet_eps)
        if edm_coreset is not None and (edm_coreset < 1 or official):
            raise ValueError(
                f"edm_coreset must be None or >= 1 centre per class, with official=False; "
                f"got {edm_coreset} (official={official})"
            )
        self.r_c, self.r_e, self.weight, self.official = r_c, r_e, weight, official
        self.logdet_eps, self.edm_coreset = logdet_eps, edm_coreset
        self.terms = tuple(t for t in ALL_TERMS if t in terms)
        self._bank_cache: tuple[RealBank, torch.device, torch.dtype, RealBank] | None = None
        self._dict_cache: tuple[Mapping, tuple, RealBank] | None = None

    def _from_dict(self, real: Mapping[int, torch.Tensor]) -> RealBank:
        """The bank of dict ``real``, rebuilt only when the dict, its tensors or their contents changed."""
        signature = tuple((c, id(t), getattr(t, "_version", None)) for c, t in real.items())
        cache = self._dict_cache
        if cache is None or cache[0] is not real or cache[1] != signature:
            self._dict_cache = cache = (real, signature, RealBank.from_dict(real))
        return cache[2]

    def _bank(self, real: RealBank | Mapping[int, torch.Tensor], z: torch.Tensor) -> RealBank:
        bank = real if isinstance(real, RealBank) else self._from_dict(real)
        if bank.emb.device == z.device and bank.emb.dtype == z.dtype and self.edm_coreset is None:
            return bank
        # keep one device/dtype (and coreset) copy of a RealBank so it is not rebuilt every step
        cache = self._bank_cache
        if cache is None or cache[0] is not bank or cache[1] != z.device or cache[2] != z.dtype:
            use = bank.coreset(self.edm_coreset) if self.edm_coreset is not None and "edm" in self.terms else bank
            self._bank_cache = cache = (bank, z.device, z.dtype, use.to(z.device, z.dtype))
        return cache[3]

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor, real: RealBank | Mapping[int, torch.Tensor]
    ) -> torch.Tensor:
        if not self.terms:
            return z.new_zeros(())
        terms = batched_terms(
            z, labels, self._bank(real, z), official=self.official, terms=self.terms, logdet_eps=self.logdet_eps
        )
        weights = {"cd": self.r_c, "cdm": self.r_c, "logdet": self.r_c, "edm": self.r_e}
        loss = z.new_zeros(())
        for term in self.terms:
            loss = loss + weights[term] * terms[term].sum()
        return self.weight * loss

    def extra_repr(self) -> str:
        extra = f", logdet_eps={self.logdet_eps}" if "logdet" in self.terms else ""
        extra += f", edm_coreset={self.edm_coreset}" if self.edm_coreset is not None else ""
        return (
            f"r_c={self.r_c}, r_e={self.r_e}, weight={self.weight}, official={self.official}, terms={self.terms}{extra}"
        )
