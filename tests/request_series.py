"""The sidecar's request counters read from a scrape, to assert on their labels."""

from __future__ import annotations

from meshlet.observe.samples import REQUESTS, text_samples


def request_series(text: str) -> list[tuple[dict[str, str], float]]:
    """Every ``meshlet_proxy_requests_total`` series of a scrape: its labels and count."""
    return [(dict(s.labels), float(s.value)) for s in text_samples(text) if s.name == REQUESTS]


def request_count(text: str, **match: str) -> float:
    """The requests of every series whose labels include ``match``."""
    return sum(value for labels, value in request_series(text)
               if all(labels.get(k) == v for k, v in match.items()))
