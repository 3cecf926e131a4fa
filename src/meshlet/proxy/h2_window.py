"""Sending a stream's buffered bytes as HTTP/2 DATA within the peer's windows: what both
sides of the sidecar's HTTP/2 (``h2_downstream``, ``h2_upstream``) do the same way."""

from __future__ import annotations

from collections import deque
from typing import Any


def opened(streams: dict[int, Any], stream_id: int) -> list[Any]:
    """The streams a WINDOW_UPDATE for ``stream_id`` lets send again (0: every one)."""
    if stream_id == 0:
        return list(streams.values())
    stream = streams.get(stream_id)
    return [] if stream is None else [stream]


def send_windowed(conn: Any, stream_id: int, out: deque[bytes], end_after: bool) -> int:
    """Send from ``out`` what the stream's and the connection's windows allow, in frames
    of at most the peer's frame size, the last with END_STREAM if ``end_after`` and
    ``out`` empties; the bytes sent (the caller keeps its own count)."""
    sent = 0
    while out:
        window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
        if window <= 0:
            break
        data = out[0]
        if len(data) > window:
            out[0] = data[window:]
            data = data[:window]
        else:
            out.popleft()
        sent += len(data)
        conn.send_data(stream_id, data, end_stream=end_after and not out)
    return sent
