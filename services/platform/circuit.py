"""Circuit breaker (closed -> open after repeated failures -> half-open probe -> closed).

When a backend keeps failing, calling it only burns the caller's deadline; an open circuit fails
fast and lets one probe through after ``reset_after`` seconds to find out whether it is back.

A probe that ends without a verdict (its caller was cancelled: the page failed on another
backend, the visitor left) must hand the probe back with ``release``, or the circuit would stay
half-open with nobody allowed to probe. As a second line, a probe older than ``reset_after`` is
presumed lost and another is let through: no path can wedge the circuit for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    reset_after: float = 5.0
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[State], None] | None = None
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    probe_started: float = 0.0
    _state: State = field(default=State.CLOSED)

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self.clock() - self.opened_at >= self.reset_after:
            self._set(State.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open, only one probe at a time."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN:
            now = self.clock()
            if not self.probing or now - self.probe_started >= self.reset_after:
                self.probing = True
                self.probe_started = now
                return True
        return False

    def release(self) -> None:
        """A call ended with no verdict on the backend (cancelled): let the next one probe."""
        self.probing = False

    def record_success(self) -> None:
        self.failures = 0
        self.probing = False
        if self._state is not State.CLOSED:
            self._set(State.CLOSED)

    def record_failure(self) -> None:
        self.probing = False
        self.failures += 1
        if self._state is State.HALF_OPEN or self.failures >= self.failure_threshold:
            self.opened_at = self.clock()
            self._set(State.OPEN)

    def _set(self, state: State) -> None:
        self._state = state
        if self.on_change:
            self.on_change(state)
