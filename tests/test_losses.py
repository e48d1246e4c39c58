"""RegressionLoss: the matched and broadcast target layouts."""

import pytest
import torch
import torch.nn.functional as F

from volreg.losses import RegressionLoss

PREDICTION = torch.tensor([[0.1], [0.5], [0.9], [0.3]])
TARGET = torch.tensor([[0.0], [1.0], [0.5], [0.25]])


@pytest.mark.parametrize(("kind", "function"), [("l1", F.l1_loss), ("mse", F.mse_loss)])
def test_matched_equals_elementwise_loss(kind, function):
    loss = RegressionLoss(kind, "matched")(PREDICTION, TARGET)

    torch.testing.assert_close(loss, function(PREDICTION, TARGET))


def test_matched_rejects_flat_target():
    with pytest.raises(ValueError, match=r"prediction shape \(4, 1\) and target shape \(4,\)"):
        RegressionLoss("l1", "matched")(PREDICTION, TARGET.reshape(-1))


def test_broadcast_reproduces_pytorch_broadcasting():
    with pytest.warns(UserWarning, match="Using a target size"):
        loss = RegressionLoss("l1", "broadcast")(PREDICTION, TARGET)

    # Every prediction against every target: the mean of the (4, 4) matrix |p_i - t_j|.
    expected = (PREDICTION - TARGET.reshape(1, -1)).abs().mean()
    torch.testing.assert_close(loss, expected)
    assert loss.item() != pytest.approx(F.l1_loss(PREDICTION, TARGET).item())


def test_broadcast_rejects_several_targets():
    with pytest.raises(ValueError, match="single-target"):
        RegressionLoss("l1", "broadcast")(torch.zeros(4, 2), torch.zeros(4, 2))


@pytest.mark.parametrize(
    ("kind", "layout", "message"),
    [
        ("mae", "matched", "invalid loss kind='mae'"),
        ("l1", "squeeze", "invalid target_layout='squeeze'"),
    ],
)
def test_invalid_settings(kind, layout, message):
    with pytest.raises(ValueError, match=message):
        RegressionLoss(kind, layout)
