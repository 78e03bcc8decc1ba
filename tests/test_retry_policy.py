"""The one backoff policy and the one Retry-After parser (glue/retry.py), as handlers see them."""

from __future__ import annotations

import datetime
import email.utils
import random

import pytest

import glue
from glue import routing

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


def http_date(when: datetime.datetime) -> str:
    return email.utils.format_datetime(when, usegmt=True)


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = glue.RetryPolicy(initial=1, multiplier=2, max=5, jitter=0)
    rng = random.Random(1)
    assert [policy.delay(attempt, rng) for attempt in range(1, 7)] == [1, 2, 4, 5, 5, 5]


def test_jitter_stays_within_its_bounds_and_under_the_cap() -> None:
    policy = glue.RetryPolicy(initial=2, multiplier=3, max=40, jitter=0.25)
    rng = random.Random(1)
    for attempt in range(1, 8):
        base = min(2 * 3 ** (attempt - 1), 40)
        samples = [policy.delay(attempt, rng) for _ in range(500)]
        assert min(samples) >= base * 0.75
        assert max(samples) <= min(base * 1.25, 40)
        assert max(samples) - min(samples) > base * 0.1, "jitter actually spreads the delays"


@pytest.mark.parametrize("attempt", [1100, 5000, 10**9])
def test_no_overflow_far_down_the_schedule(attempt: int) -> None:
    policy = glue.RetryPolicy(initial=1.5, multiplier=2.0, max=300, jitter=0.5)
    delay = policy.delay(attempt, random.Random(1))
    assert 150 <= delay <= 300


def test_a_routes_backoff_is_the_policy_the_executor_waits_by() -> None:
    backoff = routing.Backoff(initial=2, multiplier=3, max=40, jitter=0.25)
    assert backoff.policy() == glue.RetryPolicy(initial=2, multiplier=3, max=40, jitter=0.25)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("7", 7.0), (" 120 ", 120.0), ("86400", 86400.0)],
)
def test_retry_after_in_delta_seconds(value: str, seconds: float) -> None:
    assert glue.retry_after(value, NOW) == seconds


def test_retry_after_as_a_future_http_date() -> None:
    value = http_date(NOW + datetime.timedelta(seconds=30))
    assert glue.retry_after(value, NOW) == 30.0


def test_retry_after_as_a_past_http_date_is_now() -> None:
    assert glue.retry_after(http_date(NOW - datetime.timedelta(hours=1)), NOW) == 0.0


def test_retry_after_date_without_zone_is_utc() -> None:
    assert glue.retry_after("Sun, 01 Mar 2026 12:00:10 -0000", NOW) == 10.0


def test_retry_after_measures_from_the_current_time_by_default() -> None:
    value = http_date(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60))
    delay = glue.retry_after(value)
    assert delay is not None and 55 <= delay <= 60


@pytest.mark.parametrize(
    "value", [None, "", "  ", "soon", "-5", "1.5", "+3", "0x10", "٣", "Sun, 32 Mar 2026 12:00:00 GMT"]
)
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert glue.retry_after(value, NOW) is None


def test_equal_jitter_waits_between_half_and_all_of_each_step() -> None:
    policy = glue.RetryPolicy.equal_jitter(initial=0.25, maximum=5)
    rng = random.Random(3)
    for attempt in range(1, 12):
        step = min(0.25 * 2 ** (attempt - 1), 5)
        samples = [policy.delay(attempt, rng) for _ in range(500)]
        assert step * 0.5 - 1e-9 <= min(samples)
        assert max(samples) <= step + 1e-9
    first = [policy.delay(1, rng) for _ in range(2000)]
    assert min(first) < 0.25 * 0.55 and max(first) > 0.25 * 0.95, "the whole range is used"
