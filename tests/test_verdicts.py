"""Toward readable verdicts: Coverage's expectation for identical distributions (against a Monte-Carlo
estimate on identical Gaussians), Coverage at matched sizes (with k reduced where M <= k), and the paired
per-seed difference with its confidence interval (against scipy)."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest
from scipy import stats

from dire.evaluation.common import paired_difference
from dire.metrics import coverage, coverage_expectation, diversity_metrics, matched_coverage
from dire.report.tables import delta_cell


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
    # a table's CSV holds the dict's repr, which must read back as numbers (np.float64(...) would not)
    assert ast.literal_eval(repr(out)) == out


def test_paired_difference_edge_cases():
    one = paired_difference([71.0], [70.0])
    assert one["delta"] == 1.0 and math.isnan(one["low"]) and not one["excludes_zero"]
    undefined = paired_difference([math.nan, 0.5], [0.4, 0.4])  # intra-class cosine at IPC 1 is NaN
    assert math.isnan(undefined["delta"]) and math.isnan(undefined["high"]) and not undefined["excludes_zero"]
    assert delta_cell(undefined, 2) == "–" and delta_cell(one, 2) == "+1.00 (1 seed)"
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


# --------------------------------------------------------------------------------------------------------------
# wired into the pipeline and the tables: a digits compare with the reference row and an evaluator


@pytest.fixture(scope="module")
def compared(runs_root):
    from dire.experiments.config import make_experiment
    from dire.experiments.drivers import compare

    base = make_experiment(
        dataset="digits",
        method="sre2l",
        ipc=3,
        ipc_per_unit=3,
        iterations=5,
        bank_per_class=50,
        student_epochs=8,
        metric_arch="convnet_w32",  # instance norm, width 32: another network than the convnet_bn teacher
    )
    rows = compare(base, seeds=[0, 1, 2], reference_row=True, log=lambda _m: None, runs_root=runs_root, progress=False)
    return base, rows


@pytest.mark.slow
def test_reference_row_is_real_training_images(compared):
    import torch

    from dire.data import to_uint8
    from dire.nets.teacher import training_split
    from dire.runs import load

    base, rows = compared
    assert [r["method"] for r in rows] == ["real", "sre2l", "sre2l"] and rows[0]["protocol"] == "soft"
    train, _ = training_split("digits", holdout=None)
    sets = [load(f"{run['synthetic_dir']}/synthetic.pt") for run in rows[0]["runs"]]
    for s in sets:
        assert torch.bincount(s["labels"]).tolist() == [base.synthesis.ipc] * 10  # M = IPC per class
        for c in range(10):
            real = to_uint8(train.class_images(c), train.info).flatten(1)
            ours = s["images"][s["labels"] == c].flatten(1)
            # every image is, pixel for pixel, a real training image of its class, and no image repeats
            assert all(bool((real == x).all(1).any()) for x in ours)
            assert len(torch.unique(ours, dim=0)) == len(ours)
    assert not torch.equal(sets[0]["images"], sets[1]["images"])  # seeded per seed


@pytest.mark.slow
def test_dire_rows_report_paired_t_against_their_baseline(compared):
    _, rows = compared
    base, dire = rows[1], rows[2]
    assert "delta_acc_final" not in base and "delta_acc_final" not in rows[0]
    for metric in ("acc_final", "vendi", "eval_vendi", "coverage_matched", "eval_intra_class_cosine"):
        ours, theirs = [r[metric] for r in dire["runs"]], [r[metric] for r in base["runs"]]
        ci = stats.ttest_rel(ours, theirs).confidence_interval(0.95)
        out = dire[f"delta_{metric}"]
        assert out["delta"] == pytest.approx(np.mean(np.subtract(ours, theirs)), abs=1e-12)
        assert (out["low"], out["high"]) == pytest.approx((ci.low, ci.high), rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_rows_carry_coverage_expectations_and_both_networks(compared):
    from dire.report.tables import table_notes, to_markdown

    base, rows = compared
    for row in rows:
        for run in row["runs"]:
            # N = the bank's 50 real per class, M = IPC, k = 5
            assert run["coverage_expected"] == pytest.approx(coverage_expectation(50, base.synthesis.ipc, 5))
            assert run["coverage_matched_expected"] == pytest.approx(coverage_expectation(3, 3, 2))
            assert run["coverage_matched_k"] == 2  # M = 3 <= k: k = M - 1
            assert run["eval_coverage_expected"] == run["coverage_expected"]
            # the teacher's and the evaluator's features give other values
            assert run["vendi"] != run["eval_vendi"] and run["intra_class_cosine"] != run["eval_intra_class_cosine"]
        assert row["metric_network"] == "teacher convnet_bn" and row["eval_network"] == "evaluator convnet_w32"
    md = to_markdown(rows)
    head = md.splitlines()[0]
    for column in ("Δ acc (95 % CI)", "Vendi ↑ (teacher)", "Vendi ↑ (eval)", "Coverage (E) ↑ (eval)",
                   "matched Cov. (E) (teacher)", "Δ Vendi (eval)"):  # fmt: skip
        assert column in head
    assert md.splitlines()[2].startswith("| real subset | digits | 3 | soft |")
    assert f"(E {rows[0]['coverage_expected']['mean']:.3f})" in md and ", k 2)" in md
    assert "paired-t" in table_notes(rows) and "real subset" in table_notes(rows)


def test_per_ipc_methods_and_variants():
    from dire.experiments.drivers import methods_at, variants_at

    methods = ["sre2l", "cda", "dwa"]
    assert methods_at(10, methods, {1: ["dwa", "sre2l"]}) == methods  # no entry: all
    assert methods_at(1, methods, {"1": ["dwa", "sre2l"]}) == ["sre2l", "dwa"]  # a string key as JSON gives it
    with pytest.raises(ValueError, match=r"ipc_methods\[1\] names \['mtt'\]"):
        methods_at(1, methods, {1: ["mtt"]})
    variants = {"ld": {"terms": ["logdet"], "methods": ["dwa"], "ipcs": [10]}, "all": {"weight": 0.2}}
    ld = {"terms": ["logdet"], "methods": ["dwa"]}
    assert variants_at(10, variants, methods) == {"ld": ld, "all": {"weight": 0.2}}
    assert variants_at(1, variants, ["sre2l"]) == {"all": {"weight": 0.2}}


def test_real_subset_refuses_dire(digits, tmp_path):
    import torch

    from dire.synthesis import DiReConfig, RealSubset, SynthesisConfig, synthesize
    from dire.synthesis.base import Context

    teacher, train, bank = digits
    ctx = Context(teacher=teacher, dataset=train, config=SynthesisConfig(ipc=2), device=torch.device("cpu"), bank=bank)
    with pytest.raises(ValueError, match="takes no synthesis steps"):
        synthesize(RealSubset(), ctx, out_dir=tmp_path, dire=DiReConfig(enabled=True), progress=False)
    out = synthesize(RealSubset(), ctx, out_dir=tmp_path, progress=False)
    assert torch.bincount(out["labels"]).tolist() == [2] * 10 and float(out["seconds"]) < 5


@pytest.mark.slow
def test_cli_compare_adds_the_reference_row(compared, runs_root, tmp_path):
    from dire.cli import main

    _, rows = compared  # the same settings: the CLI's runs come from the fixture's cache
    argv = ["compare", "--dataset", "digits", "--method", "sre2l", "--ipc", "3", "--ipc-per-unit", "3"]
    argv += ["--iterations", "5", "--bank-per-class", "50", "--student-epochs", "8", "--metric-arch", "convnet_w32"]
    argv += ["--method-arg", "r_bn=0.01", "--method-arg", "jitter=4", "--seeds", "0,1,2", "--reference-row", "on"]
    main([*argv, "--runs-root", str(runs_root), "--out", str(tmp_path / "t"), "--quiet"])
    table = (tmp_path / "t.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:5]] == ["real subset", "sre2l", "sre2l + DiRe"]
    real = next(r for r in rows if r["method"] == "real")
    assert f"{real['acc_final']['mean']:.2f}" in table  # the fixture's real row, from the cache


def test_ipc1_cells_read_as_undefined_not_nan():
    """At IPC 1 a class has one image: intra-class cosine has no pair (NaN from dire.metrics), which the table
    shows as "–", and the footnote says why."""
    from dire.metrics import intra_class_cosine
    from dire.report.tables import mean_pm, table_notes

    one_per_class = intra_class_cosine(np.eye(3), [0, 1, 2])["mean"]
    assert math.isnan(one_per_class)
    assert mean_pm({"mean": one_per_class, "std": 0.0, "n": 5}, 3) == "–"
    assert mean_pm({"mean": 0.6141, "std": 0.0032, "n": 5}, 3) == "0.614 ± 0.003"
    row = {"metric_network": "teacher convnet_bn", "ipc": 1}
    assert "IPC 1: one image per class" in table_notes([row])
    assert "IPC 1" not in table_notes([{**row, "ipc": 10}])
