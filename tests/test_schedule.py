"""Tests of metarec_core.schedule: the plan of phases per epoch, and how a pass is cut into batches."""
import numpy as np
import pytest
import torch

from metarec_core.schedule import batch, n_batches, plan
from metarec_core.train_config import TrainConfig


def config(**values) -> TrainConfig:
    return TrainConfig(**{"num_epochs": 2, "meta_epochs": 1, "trans_epochs": 2, **values})


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("alternating", ["meta", "transfer", "transfer", "meta", "transfer", "transfer"]),
        ("sequential", ["transfer", "transfer", "transfer", "transfer", "meta", "meta"]),
        ("joint", ["joint", "joint", "joint", "joint"]),
    ],
)
def test_schedules_run_expected_phases(schedule, expected):
    assert [phase for _, phase, _ in plan(config(schedule=schedule), n_meta_steps=3, n_trans_steps=5)] == expected


def test_blocks_carry_their_epoch_and_the_steps_of_their_phase():
    assert plan(config(), n_meta_steps=3, n_trans_steps=5) == [
        (0, "meta", 3), (0, "transfer", 5), (0, "transfer", 5), (1, "meta", 3), (1, "transfer", 5), (1, "transfer", 5),
    ]
    # Sequential: the meta stage's epochs come after the transfer stage's.
    assert [e for e, _, _ in plan(config(schedule="sequential"), n_meta_steps=3, n_trans_steps=5)] == [0, 0, 1, 1, 2, 3]
    assert plan(config(schedule="joint"), n_meta_steps=3, n_trans_steps=5)[0] == (0, "joint", 3)


@pytest.mark.parametrize("schedule", ["alternating", "sequential", "joint"])
def test_a_zero_lambda_or_no_steps_leaves_a_phase_out(schedule):
    only_transfer = plan(config(schedule=schedule, lambda_meta=0.0), n_meta_steps=3, n_trans_steps=5)
    assert only_transfer and {p for _, p, _ in only_transfer} == {"transfer"}
    only_meta = plan(config(schedule=schedule, lambda_trans=0.0), n_meta_steps=3, n_trans_steps=5)
    assert only_meta and {p for _, p, _ in only_meta} == {"meta"}
    no_meta_users = plan(config(schedule=schedule), n_meta_steps=0, n_trans_steps=5)
    assert no_meta_users and {p for _, p, _ in no_meta_users} == {"transfer"}
    # A sequential run without its transfer stage starts its meta stage at epoch 0.
    assert only_meta[0][0] == 0


def test_n_batches_rounds_up_and_is_zero_for_no_examples():
    assert [n_batches(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


@pytest.mark.parametrize("as_tensor", [False, True])
def test_batches_wrap_around_so_every_batch_is_full(as_tensor):
    order = np.arange(10) if not as_tensor else torch.arange(10)
    batches = [np.asarray(batch(order, b, 4)).tolist() for b in range(n_batches(10, 4))]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert isinstance(batch(order, 2, 4), torch.Tensor if as_tensor else np.ndarray)
    # A batch larger than the data is the whole data once; no data gives an empty batch.
    assert np.asarray(batch(order[:3], 0, 8)).tolist() == [0, 1, 2]
    assert len(batch(order[:0], 0, 4)) == 0
