"""Health status from probe results with thresholds, as Kubernetes probes count them.

A status flips to ``passing`` after ``healthy_threshold`` consecutive successes and to
``critical`` after ``unhealthy_threshold`` consecutive failures.
"""

from __future__ import annotations


class HealthTracker:
    def __init__(self, healthy_threshold: int, unhealthy_threshold: int,
                 status: str = "critical") -> None:
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.status = status
        self.successes = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"<HealthTracker {self.status} +{self.successes} -{self.failures}>"

    def record(self, ok: bool) -> bool:
        """Count one probe result; True if the status changed."""
        if ok:
            self.successes += 1
            self.failures = 0
            if self.status != "passing" and self.successes >= self.healthy_threshold:
                self.status = "passing"
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.status != "critical" and self.failures >= self.unhealthy_threshold:
                self.status = "critical"
                return True
        return False

    def reset(self, status: str = "critical") -> None:
        """Start counting afresh, e.g. after the process restarted."""
        self.status = status
        self.successes = 0
        self.failures = 0
