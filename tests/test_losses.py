import pytest
import torch

from spikegrad.losses import lower_rate_penalty, reduce_readout, upper_rate_penalty


def test_readout_reductions():
    trace = torch.tensor([[[1.0, 4.0], [3.0, -1.0], [2.0, 0.5]]])  # [B=1, T=3, K=2]
    assert reduce_readout(trace, "max").tolist() == [[3.0, 4.0]]
    assert reduce_readout(trace, "sum").tolist() == [[6.0, 3.5]]
    assert reduce_readout(trace, "mean")[0].tolist() == pytest.approx([2.0, 3.5 / 3])
    assert reduce_readout(trace, "last").tolist() == [[2.0, 0.5]]
    with pytest.raises(ValueError, match="unknown readout reduction"):
        reduce_readout(trace, "median")


def test_upper_rate_penalty_by_hand():
    counts = torch.tensor([[0.0, 2.0, 4.0, 6.0], [1.0, 1.0, 1.0, 1.0]])  # means 3 and 1
    # sample 1: ([3 - 2]_+)^2 = 1; sample 2: ([1 - 2]_+)^2 = 0; batch mean 0.5, times lambda 4
    assert float(upper_rate_penalty(counts, 4.0, 2.0, 2.0)) == pytest.approx(2.0)
    assert float(upper_rate_penalty(counts, 1.0, 0.0, 3.0)) == pytest.approx((27 + 1) / 2)


def test_lower_rate_penalty_by_hand():
    counts = torch.tensor([[0.0, 0.5, 3.0, 1.0]])
    # nu = 1: [1-0]^2 + [1-0.5]^2 + 0 + 0 = 1.25; lambda / N = 100 / 4
    assert float(lower_rate_penalty(counts, 100.0, 1.0)) == pytest.approx(100 * 1.25 / 4)
    assert float(lower_rate_penalty(counts, 100.0, 0.0)) == 0.0
