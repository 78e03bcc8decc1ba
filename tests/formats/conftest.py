"""Decoder tests: a Hypothesis profile that keeps the fuzzing inside the area's time budget."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "formats",
    max_examples=150,
    deadline=None,  # the machine is shared; a slow example is not a failure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
