"""Resilience decisions, each pure and clocked by the caller: retry budget, outlier
detection, circuit-breaker limits and token-bucket rate limiting."""
