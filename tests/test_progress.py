"""Tests of metarec_core.progress: the time-left estimate priced per phase, with validations and skipped blocks."""
import dataclasses

import pytest

from metarec_core.progress import ProgressEvent, TimeLeft

PLAN = [(0, "meta", 2), (0, "transfer", 4), (1, "meta", 2), (1, "transfer", 4)]


def test_time_left_prices_each_phase_at_its_own_step_cost() -> None:
    now = [0.0]
    left = TimeLeft(PLAN, clock=lambda: now[0])
    assert left.seconds_left() == 0.0  # nothing measured yet
    for phase, cost in [("meta", 10.0), ("meta", 10.0), ("transfer", 1.0)]:
        now[0] += cost
        left.stepped(phase)
    # 2 meta steps at 10 s and 3 + 4 transfer steps at 1 s are left (the naive elapsed/steps × steps left says 49 s).
    assert left.seconds_left() == pytest.approx(2 * 10.0 + 7 * 1.0)
    for _ in range(3):
        now[0] += 1.0
        left.stepped("transfer")
    now[0] += 5.0
    left.validated()  # one validation took 5 s; one more epoch (and validation) to go
    assert left.seconds_left() == pytest.approx(2 * 10.0 + 4 * 1.0 + 5.0)


def test_an_unseen_phase_is_priced_at_the_overall_mean_step() -> None:
    now = [0.0]
    left = TimeLeft(PLAN, clock=lambda: now[0])
    now[0] += 3.0
    left.stepped("meta")
    # 1 + 2 meta steps at 3 s, and 8 transfer steps not yet seen, at the overall mean (3 s).
    assert left.seconds_left() == pytest.approx(3 * 3.0 + 8 * 3.0)


def test_skipped_blocks_leave_the_estimate_and_it_never_goes_negative() -> None:
    now = [0.0]
    left = TimeLeft(PLAN, clock=lambda: now[0])
    for phase in ("meta", "meta", "transfer", "transfer", "transfer", "transfer"):
        now[0] += 2.0
        left.stepped(phase)
    now[0] += 4.0
    left.validated()
    assert left.seconds_left() == pytest.approx(6 * 2.0 + 4.0)
    left.skipped([b for b in PLAN if b[0] == 1])  # early stopping drops epoch 1 and its validation
    assert left.seconds_left() == 0.0
    left.stepped("meta")  # more steps than planned do not make the estimate negative
    assert left.seconds_left() == 0.0


def test_progress_event_is_a_frozen_record() -> None:
    event = ProgressEvent("meta", 1, 3, 10, {"total": 1.0}, {}, 0.5, 2.0)
    assert dataclasses.asdict(event)["losses"] == {"total": 1.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.step = 4
