"""BN-statistics loss against a hand computation on a tiny BN network."""

import pytest
import torch
import torch.nn as nn

from dire.synthesis.bn import BNStatistics


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    )
    for bn in (net[1], net[4]):  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return net.eval()


def test_bn_loss_matches_hand_computation():
    net, x = _net(), torch.randn(5, 2, 6, 6, dtype=torch.float64)
    net = net.double()
    with BNStatistics(net, r_var=3.0) as bn:
        net(x)
        got = bn.loss(first_multiplier=10.0).detach()
    # by hand: inputs of each BN layer, biased variance over (N, H, W), plain L2 norms
    want = 0.0
    with torch.no_grad():
        a1 = net[0](x)
        a2 = net[3](net[2](net[1](a1)))
        for w, a, layer in ((10.0, a1, net[1]), (1.0, a2, net[4])):
            flat = a.permute(1, 0, 2, 3).reshape(a.shape[1], -1)
            mean, var = flat.mean(1), ((flat - flat.mean(1, keepdim=True)) ** 2).mean(1)
            want += w * (
                3.0 * torch.sqrt(((layer.running_var - var) ** 2).sum())
                + torch.sqrt(((layer.running_mean - mean) ** 2).sum())
            )
    assert float(got) == pytest.approx(float(want), rel=1e-12)


def test_hooks_removed_and_errors():
    net = _net()
    with BNStatistics(net) as bn:
        with pytest.raises(RuntimeError, match="before a forward pass"):
            bn.loss()
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError, match="no BatchNorm2d"):
        BNStatistics(nn.Sequential(nn.Conv2d(1, 1, 1)))


def test_gradient_moves_statistics_toward_running_values():
    net = _net()
    x = (torch.randn(8, 2, 6, 6) * 3 + 2).requires_grad_()
    opt = torch.optim.Adam([x], lr=0.05)
    losses = []
    for _ in range(60):
        with BNStatistics(net) as bn:
            net(x)
            loss = bn.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
