"""The gRPC statuses of the sidecar's own errors."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.proxy.grpc_status import (
    DEADLINE_EXCEEDED,
    PERMISSION_DENIED,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    UNIMPLEMENTED,
    grpc_message,
    grpc_timeout,
    is_grpc,
    status_for,
)


def test_each_reason_means_what_it_says_to_a_grpc_caller() -> None:
    assert status_for("request_timeout") == status_for("per_try_timeout") == DEADLINE_EXCEEDED
    assert status_for("intention_denied") == PERMISSION_DENIED
    assert status_for("rate_limited") == RESOURCE_EXHAUSTED
    assert status_for("no_route") == UNIMPLEMENTED
    for reason in ("no_healthy_endpoint", "connect_refused", "connect_timeout",
                   "upstream_reset", "breaker_open", "local_app_refused", "tls_handshake"):
        assert status_for(reason) == UNAVAILABLE  # worth a retry elsewhere


def test_grpc_content_types() -> None:
    assert is_grpc(b"application/grpc") and is_grpc(b"application/grpc+proto")
    assert is_grpc(b"Application/GRPC; charset=x")
    assert not is_grpc(b"application/json") and not is_grpc(b"")


def test_grpc_message_percent_encodes_what_is_not_printable_ascii() -> None:
    assert grpc_message("meshlet: no_route") == b"meshlet: no_route"
    assert grpc_message("50% ñ\n") == b"50%25 %C3%B1%0A"


@given(st.text(max_size=50))
def test_grpc_message_is_printable_ascii_and_decodes_back(text: str) -> None:
    encoded = grpc_message(text)
    assert all(0x20 <= b <= 0x7E for b in encoded)
    assert unquote_to_bytes(encoded) == text.encode()


def test_grpc_timeouts() -> None:
    assert grpc_timeout(b"200m") == pytest.approx(0.2)
    assert grpc_timeout(b"1S") == 1.0 and grpc_timeout(b"2M") == 120.0
    assert grpc_timeout(b"1H") == 3600.0 and grpc_timeout(b"5u") == pytest.approx(5e-6)
    for bad in (b"", b"m", b"123456789m", b"1.5S", b"10x", b"-1S", b"1s"):
        assert grpc_timeout(bad) is None
