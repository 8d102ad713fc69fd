"""Tests of metarec_core.losses: the pointwise and per-task losses and the L2 / L2-SP penalty, by hand."""
import math

import pytest
import torch

from metarec_core.losses import l2_penalty, pointwise_loss, rating_errors, task_losses


def test_pointwise_mse_is_the_mean_squared_error():
    predictions, targets = torch.tensor([3.0, 4.5, 1.0]), torch.tensor([4.0, 4.0, 1.0])
    assert float(pointwise_loss(predictions, targets, "mse")) == pytest.approx((1.0 + 0.25 + 0.0) / 3)


def test_huber_errors_are_the_square_up_to_delta_and_linear_beyond():
    predictions, targets = torch.tensor([3.5, 3.0, 1.0, 5.0]), torch.tensor([4.0, 3.0, 4.0, 2.5])
    errors = rating_errors(predictions, targets, huber_delta=1.0)
    # 0.5 and 0 are within δ: their square; 3 and 2.5 beyond: 2δ|e| − δ².
    torch.testing.assert_close(errors, torch.tensor([0.25, 0.0, 5.0, 4.0]))
    torch.testing.assert_close(rating_errors(predictions, targets), (predictions - targets) ** 2)
    # A far rating pulls with a bounded force: the gradient is 2δ·sign(e) beyond δ, 2e within.
    p = predictions.clone().requires_grad_(True)
    rating_errors(p, targets, huber_delta=1.0).sum().backward()
    torch.testing.assert_close(p.grad, torch.tensor([-1.0, 0.0, -2.0, 2.0]))


def test_huber_delta_reaches_the_pointwise_and_per_task_losses():
    predictions, targets = torch.tensor([[1.0, 3.5]]), torch.tensor([[4.0, 4.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert float(pointwise_loss(predictions[0], targets[0], "mse", huber_delta=1.0)) == pytest.approx((5.0 + 0.25) / 2)
    assert float(task_losses(predictions, targets, mask, "mse", huber_delta=1.0)[0]) == pytest.approx((5.0 + 0.25) / 2)
    assert float(task_losses(predictions, targets, mask, "mse")[0]) == pytest.approx((9.0 + 0.25) / 2)


def test_pointwise_bce_takes_logits():
    logits, targets = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0])
    sigmoid = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    expected = -(math.log(0.5) + math.log(1 - sigmoid(2.0)) + math.log(1 - sigmoid(-1.0))) / 3
    assert float(pointwise_loss(logits, targets, "bce")) == pytest.approx(expected, rel=1e-6)


def test_unknown_loss_kinds_are_rejected():
    with pytest.raises(ValueError, match="loss kind"):
        pointwise_loss(torch.zeros(1), torch.zeros(1), "hinge")
    with pytest.raises(ValueError, match="loss kind"):
        task_losses(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), "hinge")


def test_task_losses_average_the_masked_entries_of_each_task():
    predictions = torch.tensor([[1.0, 2.0, 9.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    targets = torch.tensor([[2.0, 4.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    # Task 0: (1 + 4) / 2, the padded 9-vs-0 ignored; task 1: 1; task 2 has no entries: 0.
    assert task_losses(predictions, targets, mask).tolist() == pytest.approx([2.5, 1.0, 0.0])


def test_l2_penalty_without_anchor_is_the_sum_of_squares():
    params = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[3.0]])}
    assert float(l2_penalty(params)) == pytest.approx(1.0 + 4.0 + 9.0)
    assert float(l2_penalty({})) == 0.0


def test_l2_sp_penalty_pulls_towards_the_anchor():
    params = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[3.0]])}
    anchor = {"a": torch.tensor([1.5, -2.0]), "b": torch.tensor([[1.0]])}
    assert float(l2_penalty(params, anchor)) == pytest.approx(0.25 + 0.0 + 4.0)
    assert float(l2_penalty(anchor, anchor)) == 0.0


def test_parameters_missing_from_the_anchor_or_of_another_shape_get_plain_l2():
    params = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[3.0]]), "new": torch.tensor([2.0])}
    anchor = {"a": torch.tensor([1.0, -2.0, 7.0]), "b": torch.tensor([[1.0]])}  # "a" has another shape
    assert float(l2_penalty(params, anchor)) == pytest.approx((1.0 + 4.0) + 4.0 + 4.0)


def test_l2_penalty_is_differentiable():
    a = torch.tensor([1.0, -2.0], requires_grad=True)
    l2_penalty({"a": a}, {"a": torch.tensor([0.0, 1.0])}).backward()
    assert a.grad.tolist() == [2.0, -6.0]


def test_occurrence_penalty_weights_each_row_by_how_often_the_batch_holds_it():
    from metarec_core.losses import occurrence_penalty

    table = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 5.0]])
    index = torch.tensor([0, 0, 0, 1])
    # Row 0 three times (norm² 5), row 1 once (norm² 9), row 2 never: (3·5 + 9) / 4.
    assert float(occurrence_penalty({"t": (table, index)})) == pytest.approx(6.0)
    anchor = {"t": torch.ones(3, 2)}
    assert float(occurrence_penalty({"t": (table, index)}, anchor)) == pytest.approx((3 * 1.0 + 5.0) / 4)
