"""Which registered metrics URLs the server's signal sampler fetches: only plain http
to the instance's own address."""

from __future__ import annotations

import pytest

from meshlet.api.signal_sampler import scrape_url
from meshlet.state.model import Instance


def inst(address: str, metrics: str) -> Instance:
    return Instance("a-1", "a", address, 80, (), {"metrics": metrics}, 1, "", "", "passing")


@pytest.mark.parametrize(("address", "metrics", "url"), [
    ("127.0.0.1", "http://127.0.0.1:9100", "http://127.0.0.1:9100/metrics"),
    ("127.0.0.1", "http://127.0.0.1:9100/", "http://127.0.0.1:9100/metrics"),
    ("::1", "http://[::1]:9100", "http://[::1]:9100/metrics"),
    ("10.0.0.1", "http://127.0.0.1:9100", None),          # another host
    ("127.0.0.1", "https://127.0.0.1:9100", None),        # not plain http
    ("127.0.0.1", "file:///etc/passwd", None),
    ("127.0.0.1", "http://127.0.0.1", None),              # no port
    ("127.0.0.1", "http://127.0.0.1:9100/admin", None),   # a path
    ("127.0.0.1", "http://u:p@127.0.0.1:9100", None),     # credentials
    ("127.0.0.1", "http://127.0.0.1:9100?x=1", None),
    ("127.0.0.1", "http://127.0.0.1:99999", None),        # a port out of range
    ("127.0.0.1", "", None),
])
def test_only_the_instances_own_address_is_scraped(address: str, metrics: str,
                                                   url: str | None) -> None:
    assert scrape_url(inst(address, metrics)) == url
