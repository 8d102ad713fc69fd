"""Tests of metarec_core.averaging: the moving average of the weights, and keeping the best epoch's weights."""
import pytest
import torch

from metarec_core.averaging import BestEpoch, WeightAverage


def test_weight_average_follows_the_weights_and_swaps_back():
    model = torch.nn.Linear(2, 1)
    rates = {"w": torch.tensor([0.5])}
    average = WeightAverage(model, rates, decay=0.9)
    start = model.weight.detach().clone()
    for _ in range(200):  # far past the warm-up ramp: the decay is 0.9
        with torch.no_grad():
            model.weight.add_(1.0)
        average.update()
    # An EMA of a weight growing by 1 per step lags it by decay / (1 - decay) = 9 steps.
    assert torch.allclose(average.mean["model.weight"], start + 200 - 9, atol=1e-3)
    live = model.weight.detach().clone()
    with average.applied():
        assert torch.allclose(model.weight, average.mean["model.weight"])
        assert torch.allclose(rates["w"], torch.tensor([0.5]))
    assert torch.equal(model.weight, live)
    average.apply()
    assert torch.allclose(model.weight, start + 191, atol=1e-3)


def test_weight_average_early_steps_are_not_held_back_by_the_initial_weights():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, {}, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(5):
        average.update()
    assert float(average.mean["model.weight"]) > 0.5  # a plain 0.999 decay would still be at 0.005


def test_weight_average_covers_the_inner_rates():
    model = torch.nn.Linear(1, 1)
    rates = {"user_taste": torch.zeros(3)}
    average = WeightAverage(model, rates, decay=0.5)
    rates["user_taste"].fill_(2.0)
    for _ in range(60):
        average.update()
    assert torch.allclose(average.mean["inner_lr.user_taste"], torch.full((3,), 2.0), atol=1e-3)
    rates["user_taste"].fill_(7.0)
    with average.applied():
        assert torch.allclose(rates["user_taste"], torch.full((3,), 2.0), atol=1e-3)
    assert torch.equal(rates["user_taste"], torch.full((3,), 7.0))


def test_applied_restores_the_live_weights_even_when_the_block_fails():
    model = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(model, {}, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(5.0)
    with pytest.raises(RuntimeError):
        with average.applied():
            raise RuntimeError("validation failed")
    assert float(model.weight.detach()) == 5.0


def offer(best: BestEpoch, model: torch.nn.Module, rates: dict, epoch: int, value: float, metric: str = "valid_mae") -> None:
    with torch.no_grad():
        model.weight.fill_(float(epoch))
        for rate in rates.values():
            rate.fill_(10.0 * epoch)
    best.offer(epoch, {metric: value}, model, rates)


def test_best_epoch_keeps_the_lowest_mae_and_restores_it():
    model = torch.nn.Linear(1, 1, bias=False)
    rates = {"user_offset": torch.zeros(())}
    best = BestEpoch()
    for epoch, mae in [(1, 0.9), (2, 0.7), (3, 0.8)]:
        offer(best, model, rates, epoch, mae)
    assert best.epoch == 2 and best.value == pytest.approx(0.7)
    best.restore(model, rates)
    assert float(model.weight.detach()) == 2.0 and float(rates["user_offset"]) == 20.0


def test_best_epoch_on_implicit_data_keeps_the_highest_auc_and_ignores_epochs_without_a_score():
    model = torch.nn.Linear(1, 1, bias=False)
    rates = {"user_offset": torch.zeros(())}
    best = BestEpoch()
    for epoch, auc in [(1, 0.6), (2, 0.8), (3, 0.7)]:
        offer(best, model, rates, epoch, auc, metric="valid_auc")
    best.offer(4, {}, model, rates)  # one-class validation: nothing to compare
    assert best.epoch == 2
    best.restore(model, rates)
    assert float(model.weight.detach()) == 2.0 and float(rates["user_offset"]) == 20.0


def test_a_lazily_averaged_table_equals_the_average_updated_at_every_step():
    """Rows that change only now and then: averaging them row by row gives the every-step average, at any read."""
    torch.manual_seed(0)
    lazy_model, dense_model = torch.nn.Embedding(8, 3), torch.nn.Embedding(8, 3)
    with torch.no_grad():
        dense_model.weight.copy_(lazy_model.weight)
    lazy = WeightAverage(lazy_model, {}, decay=0.95, rows=("weight",))
    dense = WeightAverage(dense_model, {}, decay=0.95)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, 120):
        rows = torch.unique(torch.randint(0, 6, (2,), generator=generator))  # rows 6 and 7 never change
        change = torch.randn(len(rows), 3, generator=generator)
        lazy.catch_up({"weight": rows})
        with torch.no_grad():
            lazy_model.weight.index_add_(0, rows, change)
            dense_model.weight.index_add_(0, rows, change)
        lazy.update({"weight": rows})
        dense.update()
        if step in (5, 60):  # reading the average mid-run (validation) brings every row up to date
            with lazy.applied(), dense.applied():
                assert torch.allclose(lazy_model.weight, dense_model.weight, atol=1e-5)
    lazy.apply()
    dense.apply()
    assert torch.allclose(lazy_model.weight, dense_model.weight, atol=1e-5)
    with pytest.raises(ValueError, match="no parameter named nothing"):
        WeightAverage(lazy_model, {}, decay=0.9, rows=("nothing",))


def test_validation_trend_flags_an_early_best_epoch_that_later_epochs_lost() -> None:
    from metarec_core.averaging import validation_trend

    rising = validation_trend([1, 2, 3, 4], [0.80, 0.82, 0.85, 0.86])
    assert (rising.best_epoch, rising.last_epoch, rising.worse_after) == (1, 4, True)
    improving = validation_trend([3, 1, 2], [0.78, 0.80, 0.79])
    assert (improving.best_epoch, improving.worse_after) == (3, False)
    flat = validation_trend([1, 2, 3], [0.800, 0.799, 0.8005])  # within noise of the best: not a warning
    assert flat.best_epoch == 2 and not flat.worse_after
    auc = validation_trend([1, 2, 3], [0.70, 0.75, 0.71], lower_is_better=False)
    assert (auc.best_epoch, auc.worse_after) == (2, True)
    assert validation_trend([], []) is None
