from services.platform.circuit import CircuitBreaker, State


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_refuses_calls():
    breaker = CircuitBreaker(failure_threshold=3, reset_after=5, clock=FakeClock())
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is State.OPEN
    assert not breaker.allow()


def test_success_resets_the_failure_count():
    breaker = CircuitBreaker(failure_threshold=3, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is State.CLOSED


def test_half_open_lets_one_probe_through_after_the_reset_time():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow(), "a second call while the probe is out must wait"


def test_successful_probe_closes_and_failed_probe_reopens():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    breaker.allow()
    breaker.record_failure()
    assert breaker.state is State.OPEN
    clock.now = 10.0
    breaker.allow()
    breaker.record_success()
    assert breaker.state is State.CLOSED


def test_state_changes_are_reported():
    seen: list[State] = []
    breaker = CircuitBreaker(failure_threshold=1, clock=FakeClock(), on_change=seen.append)
    breaker.record_failure()
    breaker.record_success()
    assert seen == [State.OPEN, State.CLOSED]


def test_a_released_probe_lets_the_next_call_probe():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.release()  # the probing call was cancelled: no verdict
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow()


def test_a_lost_probe_cannot_wedge_the_circuit():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()  # ...and its caller never reports back
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow(), "a probe older than reset_after is presumed lost"
