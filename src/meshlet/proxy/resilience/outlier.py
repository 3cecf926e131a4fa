"""Passive outlier detection, as Envoy's: eject an endpoint after ``consecutive``
failures in a row (5xx responses or connection failures), for ``base_time`` x the number
of times it has been ejected (capped at ``max_time``), never ejecting more than
``max_percent`` of the endpoints at once."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int = 0
    ejections: int = 0
    until: float | None = None


class OutlierDetector:
    def __init__(self, consecutive: int = 5, base_time: float = 30.0, max_time: float = 300.0,
                 max_percent: float = 50.0) -> None:
        self.consecutive = consecutive
        self.base_time = base_time
        self.max_time = max_time
        self.max_percent = max_percent
        self._records: dict[Hashable, _Record] = {}
        self._population = 0
        self.next_expiry: float | None = None

    def __repr__(self) -> str:
        return f"<OutlierDetector ejected={sorted(map(str, self.ejected()))}>"

    def set_population(self, keys: Iterable[Hashable]) -> None:
        keys = set(keys)
        self._population = len(keys)
        for key in list(self._records):
            if key not in keys:
                del self._records[key]

    def ejected(self) -> set[Hashable]:
        return {k for k, r in self._records.items() if r.until is not None}

    @property
    def tracking(self) -> bool:
        """Whether any endpoint has failures or ejections on record (else a success
        needs no bookkeeping)."""
        return bool(self._records)

    def record(self, key: Hashable, failed: bool, now: float) -> bool:
        """Count one outcome; True if this failure ejects the endpoint."""
        if self.consecutive <= 0:
            return False
        record = self._records.get(key)
        if not failed:
            if record is not None:
                record.failures = 0
                if record.ejections == 0 and record.until is None:
                    del self._records[key]  # back to a clean slate
            return False
        if record is None:
            record = self._records[key] = _Record()
        record.failures += 1
        if record.until is not None or record.failures < self.consecutive:
            return False
        ejected = len(self.ejected())
        if self._population and (ejected + 1) * 100 > self.max_percent * self._population:
            return False  # the cap: keep serving from what is left
        record.ejections += 1
        record.failures = 0
        record.until = now + min(self.base_time * record.ejections, self.max_time)
        self.next_expiry = record.until if self.next_expiry is None \
            else min(self.next_expiry, record.until)
        return True

    def expire(self, now: float) -> list[Hashable]:
        """Return endpoints whose ejection time is over (they rejoin the pool)."""
        if self.next_expiry is None or now < self.next_expiry:
            return []
        returned = []
        upcoming = None
        for key, record in self._records.items():
            if record.until is None:
                continue
            if record.until <= now:
                record.until = None
                returned.append(key)
            else:
                upcoming = record.until if upcoming is None else min(upcoming, record.until)
        self.next_expiry = upcoming
        return returned
