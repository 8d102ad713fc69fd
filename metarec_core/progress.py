"""What ``fit`` reports while it trains: progress events and the estimate of the time left."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One report from ``fit``: where training is and what the loss terms are.

    ``phase`` is ``meta``, ``transfer``, ``joint``, ``validate`` or ``done``;
    ``losses`` holds the terms of the last step (``total``, ``meta``,
    ``trans``, ``l0``); ``metrics`` holds validation metrics on ``validate``
    and ``done`` events (``valid_mae``, ``valid_rmse``, ``valid_ndcg@3``, and
    ``test_*`` at the end).
    """

    phase: str
    epoch: int
    step: int
    total_steps: int
    losses: Mapping[str, float]
    metrics: Mapping[str, float]
    elapsed: float
    eta: float | None


class TimeLeft:
    """Seconds left in a training plan, from the measured cost of a step of each phase and of a validation.

    A meta step (a batch of tasks, each adapted) costs several times a
    transfer step, so ``elapsed / steps × steps left`` over-estimates early in
    an alternating run; here each phase's remaining steps are priced at that
    phase's own mean step time (a phase not yet seen at the overall mean), plus
    one validation per epoch still to come.
    """

    def __init__(self, plan: list[tuple[int, str, int]], clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._last = clock()
        self._left: dict[str, int] = {}
        for _, phase, n in plan:
            self._left[phase] = self._left.get(phase, 0) + n
        self._seconds: dict[str, float] = {}
        self._steps: dict[str, int] = {}
        self._validations_left = len({epoch for epoch, _, _ in plan})
        self._validation_seconds = 0.0
        self._validations = 0

    def _lap(self) -> float:
        now = self._clock()
        lap, self._last = now - self._last, now
        return lap

    def stepped(self, phase: str) -> None:
        """One step of ``phase`` has finished."""
        self._seconds[phase] = self._seconds.get(phase, 0.0) + self._lap()
        self._steps[phase] = self._steps.get(phase, 0) + 1
        self._left[phase] = max(0, self._left.get(phase, 0) - 1)

    def validated(self) -> None:
        """An end-of-epoch validation has finished."""
        self._validation_seconds += self._lap()
        self._validations += 1
        self._validations_left = max(0, self._validations_left - 1)

    def skipped(self, blocks: list[tuple[int, str, int]]) -> None:
        """Blocks of the plan that will not run (early stopping): their steps and validations leave the estimate."""
        for _, phase, n in blocks:
            self._left[phase] = max(0, self._left.get(phase, 0) - n)
        self._validations_left = max(0, self._validations_left - len({epoch for epoch, _, _ in blocks}))

    def seconds_left(self) -> float:
        """The estimate; 0 before anything was measured."""
        n = sum(self._steps.values())
        overall = sum(self._seconds.values()) / n if n else 0.0
        steps = sum(
            left * (self._seconds[phase] / self._steps[phase] if self._steps.get(phase) else overall)
            for phase, left in self._left.items()
        )
        validation = self._validation_seconds / self._validations if self._validations else 0.0
        return steps + self._validations_left * validation
