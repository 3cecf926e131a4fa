"""How much of a request head meshlet's HTTP servers read before refusing it.

The sidecar's listeners (``proxy/http.py``) and the API server (``api/fast_lane.py``)
bound what one client can make them hold or wait for, with the same numbers and the
same answers. A head is the request line and the header lines up to the blank line.
"""

from __future__ import annotations

from typing import Final

MAX_HEAD_BYTES: Final = 64 * 1024  # request line and headers → 431
MAX_HEADERS: Final = 100  # header lines → 431
MAX_URL_BYTES: Final = 8 * 1024  # the request target → 414
# RFC 9110's token characters (a header name), and the bytes a field value may not
# hold (controls but tab, and DEL): heads with either are left to a full parser to
# refuse (aiohttp's, httptools').
NAME_CHARS: Final = (b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                     b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
VALUE_CONTROLS: Final = bytes(c for c in range(32) if c != 9) + b"\x7f"
HEAD_TIMEOUT: Final = 10.0  # seconds for a head to arrive whole → 408 (sidecar)
# The API server's, which also closes a connection idle after an answer: longer than the
# 15 s an aiohttp client keeps an idle connection for reuse, so the server does not
# close one a client is about to send a request on.
API_HEAD_TIMEOUT: Final = 30.0

# The refusal codes, as the x-meshlet-error header (sidecar) or the error body's
# "code" (API) names them, with their statuses.
HEAD_TOO_LARGE: Final = "head_too_large"
URL_TOO_LONG: Final = "url_too_long"
HEAD_TIMEOUT_CODE: Final = "head_timeout"
BAD_REQUEST: Final = "bad_request"
UPGRADE_UNSUPPORTED: Final = "upgrade_unsupported"
STATUS: Final = {HEAD_TOO_LARGE: 431, URL_TOO_LONG: 414, HEAD_TIMEOUT_CODE: 408,
                 BAD_REQUEST: 400, UPGRADE_UNSUPPORTED: 501}
