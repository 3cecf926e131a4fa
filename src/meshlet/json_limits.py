"""JSON from outside, within bounds: at most 1 MiB, nested at most 32 deep, and no
``NaN``, ``Infinity`` or number too large for a float (``1e400``).

Python's ``json.loads`` takes all of these: it recurses once per level, so a body of
``[[[…]]]`` 10,000 deep ends in a RecursionError (a 500, not a 400), and it parses
``Infinity`` and ``1e400`` as an infinite float, which a setting then carries to every
sidecar. ``loads`` refuses them with a ConfigError (400) before or while parsing; the
depth is measured before parsing, by C code over the text with its strings taken out.
Pure, and light enough for the sidecar: its admin API can read bodies with it too.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from meshlet.errors import ConfigError

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
# A sidecar's config snapshot lists every endpoint it may call: larger than any API body
# (the admin API's own body limit is the same, proxy/admin_http.Limits.max_body).
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024

# A JSON string: quote, then runs of plain characters and escapes, then quote, or the
# end of the text for one never closed: each character is read once, so a text of
# escaped quotes (\"\"\"…) does not send the search back to every one of them.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*\\?(?:"|\Z)', re.S)
# Opening brackets become "(", closing ones ")"; all else is deleted.
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(raw: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``raw``'s arrays and objects nest more than ``max_depth`` deep. A run of
    more openings than that is too deep at once; otherwise each pass deletes every
    innermost pair, so what ``max_depth`` passes leave holds a pair only if the text
    nests deeper (unclosed brackets, which are not JSON, count by their number). Bytes
    methods, in C: each pass costs less than the parse it saves."""
    brackets = _STRING.sub(b"", raw).translate(_BRACKETS, _NOT_BRACKETS)
    if brackets.count(b"(") <= max_depth:
        return False
    if b"(" * (max_depth + 1) in brackets:
        return True
    for _ in range(max_depth):
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
    return b"()" in brackets or brackets.count(b"(") > max_depth


class _Refused(ValueError):
    """Valid to ``json.loads``, refused here."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text[:32]} is out of a number's range")
    return value


def loads(raw: bytes | str, what: str = "request body", max_bytes: int = MAX_BYTES,
          max_depth: int = MAX_DEPTH) -> Any:
    """``raw`` parsed (empty is ``null``); raises ConfigError (field ``body``) for text
    that is not JSON, larger than ``max_bytes`` or nested deeper than ``max_depth``,
    or that holds NaN, Infinity or a number beyond a float's range."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise ConfigError(f"{what} is {len(data)} bytes; at most {max_bytes} are allowed",
                          "body")
    if too_deep(data, max_depth):
        raise ConfigError(f"{what} nests arrays and objects more than {max_depth} deep",
                          "body")
    try:
        return json.loads(data or b"null", parse_constant=_refuse_constant,
                          parse_float=_finite_float)
    except _Refused as exc:
        raise ConfigError(f"{what}: {exc}", "body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}", "body") from None
    except RecursionError:  # deep nesting the count above missed: never a 500
        raise ConfigError(f"{what} nests arrays and objects too deep", "body") from None
