"""Hypothesis profiles: `default` keeps CI within minutes; `deep` hunts for bugs
(`pytest --hypothesis-profile=deep tests/core`)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")
