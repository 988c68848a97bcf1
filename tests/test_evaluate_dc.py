"""DC-style evaluation: schedule, learned lr, caching, ZCA, and a real-subset sanity run on digits."""

import pytest
import torch

import dire.evaluation.dc as evaluate_dc_module
from dire.data import load_dataset, to_uint8
from dire.data.zca import ZCA
from dire.evaluation.dc import DCProtocol, evaluate_dc, learning_rate, lr_at_epoch


@pytest.fixture(scope="module")
def digits_real():
    """5 real training images per class, stored as a synthetic set is (uint8), and the test split."""
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    g = torch.Generator().manual_seed(0)
    x = torch.cat([train.class_images(c, limit=5, generator=g) for c in range(10)])
    return {"images": to_uint8(x, train.info), "labels": torch.arange(10).repeat_interleave(5)}, test


def test_schedule_and_learning_rate_choice():
    assert [lr_at_epoch(0.01, e, 1000) for e in (0, 500, 501, 999)] == [
        0.01,
        0.01,
        pytest.approx(0.001),
        pytest.approx(0.001),
    ]
    assert [lr_at_epoch(1.0, e, 4) for e in range(4)] == [1.0, 1.0, 1.0, pytest.approx(0.1)]
    assert learning_rate({}, DCProtocol()) == 0.01
    assert learning_rate({"syn_lr": torch.tensor(0.02)}, DCProtocol()) == pytest.approx(0.02)
    assert learning_rate({"syn_lr": torch.tensor(0.02)}, DCProtocol(lr=0.5)) == 0.5
    with pytest.raises(ValueError, match="not a usable lr"):
        learning_rate({"syn_lr": torch.tensor(-1.0)}, DCProtocol())


def test_real_subset_trains_far_above_chance_and_results_are_cached(digits_real, tmp_path, monkeypatch):
    synthetic, test = digits_real
    key = {"synthetic": "real5"}
    out = evaluate_dc(
        synthetic, test_set=test, seeds=(0, 1), epochs=40, batch_size=32, cache_key=key, runs_root=tmp_path
    )
    assert out["protocol"] == "dc" and out["final"]["n"] == 2 and len(out["runs"]) == 2
    assert out["final"]["mean"] > 60  # 50 real digits; chance is 10 %
    assert out["runs"][0]["lr"] == 0.01 and out["best"]["mean"] == out["final"]["mean"]  # tested once, at the end
    monkeypatch.setattr(evaluate_dc_module, "train_dc", lambda *a, **k: pytest.fail("should come from the cache"))
    again = evaluate_dc(
        synthetic, test_set=test, seeds=(0, 1), epochs=40, batch_size=32, cache_key=key, runs_root=tmp_path
    )
    assert again["final"] == out["final"]


def test_same_seed_same_network_and_errors(digits_real):
    synthetic, test = digits_real
    a = evaluate_dc(synthetic, test_set=test, seeds=(3,), epochs=2, eval_every=1)
    b = evaluate_dc(synthetic, test_set=test, seeds=(3,), epochs=2, eval_every=1)
    assert a["runs"][0]["history"] == b["runs"][0]["history"] and len(a["runs"][0]["history"]) == 2
    with pytest.raises(ValueError, match="expected synthetic images"):
        evaluate_dc({"images": synthetic["images"][:, :, :4], "labels": synthetic["labels"]}, test_set=test, seeds=(0,))
    with pytest.raises(ValueError, match=r"DCProtocol.epochs = 0 is not allowed; expected a finite number >=1"):
        evaluate_dc(synthetic, test_set=test, epochs=0)
    with pytest.raises(TypeError):
        evaluate_dc(synthetic, test_set=test, epoch=3)


def test_zca_whitens_and_inverts(digits_real):
    x = load_dataset("digits").tensors()[0]
    zca = ZCA.fit(x, eps=1e-3)
    w = zca(x).flatten(1)
    cov = torch.cov(w.T.double())
    # eigen-directions with variance >> eps come out with unit variance
    assert torch.allclose(torch.linalg.eigvalsh(cov)[-20:], torch.ones(20, dtype=torch.float64), atol=0.05)
    assert torch.allclose(zca.inverse(zca(x[:10])), x[:10], atol=1e-3)
    restored = ZCA.from_state(zca.state())
    assert torch.equal(restored(x[:3]), zca(x[:3]))
    with pytest.raises(ValueError, match="fitted on images"):
        zca(torch.zeros(2, 1, 4, 4))
    synthetic, test = digits_real
    out = evaluate_dc(synthetic, test_set=test, seeds=(0,), epochs=40, batch_size=32, zca=ZCA.fit(x, eps=0.1))
    assert out["final"]["mean"] > 40  # measured 61.7
