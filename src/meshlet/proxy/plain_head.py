"""Plain HTTP/1.1 messages, read whole without the parser's callbacks. Pure.

Most requests a sidecar relays arrive in one read as one head with no body, and most
responses as one head with a ``Content-Length`` body. Read by httptools, each costs a
handful of Python calls (one per header, one per stage, more to ask for the method and
the version); read here, one. Only a strict subset is taken: what llhttp would parse
to the same message, no framing header that could be read two ways (no
``Transfer-Encoding``, on requests no ``Content-Length``), no hop-by-hop header but a
``Connection`` of ``keep-alive`` or ``close`` (and on requests ``Keep-Alive``, which
marks the head to be rebuilt), nothing after the message's end, within
the limits of ``meshlet.http_limits``. Anything else returns None and goes to
httptools, which refuses what is malformed as it always has.
"""

from __future__ import annotations

from meshlet.http_limits import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_URL_BYTES,
    NAME_CHARS,
    VALUE_CONTROLS,
)
from meshlet.proxy.headers import HAS_ERROR, HAS_HOP_BY_HOP, HAS_HOST, HAS_TRACE

# The flags and limits as this module's own constants: C integers in a compiled build.
HOST_FLAG, HOP_FLAG, ERROR_FLAG, TRACE_FLAG = HAS_HOST, HAS_HOP_BY_HOP, HAS_ERROR, HAS_TRACE
HEAD_LIMIT, HEADER_LIMIT, URL_LIMIT = MAX_HEAD_BYTES, MAX_HEADERS, MAX_URL_BYTES

# What a plain request line may hold: a method without a body of its own (CONNECT is
# not relayed), an origin-form target of visible ASCII, HTTP/1.1 or 1.0.
PLAIN_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")
# Per byte, the parts of a message it may stand in: a header name's token (RFC 9110),
# a request target (visible ASCII), a field value or reason phrase (all but controls
# other than tab, and DEL).
NAME, TARGET, VALUE = 1, 2, 4
CHAR_CLASSES = bytes((NAME if c in NAME_CHARS else 0)
                     | (TARGET if 0x21 <= c < 0x7F else 0)
                     | (VALUE if c not in VALUE_CONTROLS else 0) for c in range(256))
LINE_OVERHEAD = 4  # as http.py counts a header line toward the head's size
CR, LF, SP, HT, COLON, COMMA, SLASH, ZERO, ONE, NINE = 13, 10, 32, 9, 58, 44, 47, 48, 49, 57
# What a header's name says, read as headers.header_flags reads it, but for the names
# that make a message not plain: NOT_PLAIN.
OTHER, NOT_PLAIN, CONNECTION, CONTENT_LENGTH, KEEP_ALIVE = 0, -1, -2, -3, -4
# Statuses whose response has no body whatever its headers say.
NO_BODY_STATUS = frozenset({204, 304})
MAX_LENGTH_DIGITS = 15
# Whether this module runs compiled: its loops go byte by byte, which only a compiled
# build does faster than httptools; the Python build leaves every message to httptools.
COMPILED = not __file__.endswith(".py")

PlainRequest = tuple[bytes, bytes, list[tuple[bytes, bytes]], int, bool, str]


def starts(p: bytes, start: int, word: bytes) -> bool:
    """Whether ``word`` stands at ``p[start]`` (which has room for it)."""
    for k in range(len(word)):  # noqa: SIM110 (a loop: C's speed compiled)
        if p[start + k] != word[k]:
            return False
    return True


def plain_method(p: bytes, n: int) -> bytes | None:
    """The method of PLAIN_METHODS that the ``n`` bytes at ``p`` begin with, followed by
    a space (the constant itself: no copy), or None."""
    for method in PLAIN_METHODS:
        length = len(method)
        if length < n and p[length] == SP and starts(p, 0, method):
            return method
    return None


def name_is(p: bytes, start: int, length: int, word: bytes) -> bool:
    """Whether the ``length`` bytes at ``p[start]`` (a token) are ``word`` (lower-case
    letters and dashes) in any case: a token's byte ORed with 0x20 is a lower-case
    letter only if it is that letter in either case, and a dash only if a dash."""
    if length != len(word):
        return False
    for k in range(length):  # noqa: SIM110 (a loop: C's speed compiled)
        if p[start + k] | 0x20 != word[k]:
            return False
    return True


def name_kind(p: bytes, start: int, length: int) -> int:
    """The flag a header name sets (HOST_FLAG, ERROR_FLAG, TRACE_FLAG), OTHER, or one of
    CONNECTION, CONTENT_LENGTH, KEEP_ALIVE, NOT_PLAIN (the other hop-by-hop headers)."""
    if length == 4:
        return HOST_FLAG if name_is(p, start, 4, b"host") else OTHER
    if length == 10:
        if name_is(p, start, 10, b"connection"):
            return CONNECTION
        return KEEP_ALIVE if name_is(p, start, 10, b"keep-alive") else OTHER
    if length == 11:
        return TRACE_FLAG if name_is(p, start, 11, b"traceparent") else OTHER
    if length == 14:
        return CONTENT_LENGTH if name_is(p, start, 14, b"content-length") else OTHER
    if length == 15:
        return ERROR_FLAG if name_is(p, start, 15, b"x-meshlet-error") else OTHER
    if (length == 2 and name_is(p, start, 2, b"te")) \
            or (length == 7 and (name_is(p, start, 7, b"trailer")
                                 or name_is(p, start, 7, b"upgrade"))) \
            or (length == 16 and name_is(p, start, 16, b"proxy-connection")) \
            or (length == 17 and name_is(p, start, 17, b"transfer-encoding")):
        return NOT_PLAIN
    return OTHER


def connection_options(p: bytes, start: int, end: int, http11: bool) -> int:
    """1 or 0: whether a ``Connection`` value at ``p[start:end]`` keeps the connection
    open; -1 if it names an option but ``close`` and ``keep-alive``, or an empty one."""
    close = False
    keep = False
    i = start
    while True:
        while i < end and (p[i] == SP or p[i] == HT):
            i += 1
        token = i
        while i < end and p[i] != COMMA and p[i] != SP and p[i] != HT:
            i += 1
        if name_is(p, token, i - token, b"close"):
            close = True
        elif name_is(p, token, i - token, b"keep-alive"):
            keep = True
        else:
            return -1
        while i < end and (p[i] == SP or p[i] == HT):
            i += 1
        if i >= end:
            break
        if p[i] != COMMA:
            return -1
        i += 1
    return 0 if close or not (keep or http11) else 1


def field_name_end(p: bytes, i: int, n: int) -> int:
    """Where the header name at ``p[i]`` ends, at its colon; -1 if there is none."""
    classes = CHAR_CLASSES  # compiled: a pointer to its bytes (plain_head.pxd)
    start = i
    while i < n and classes[p[i]] & NAME:
        i += 1
    return i if start < i < n and p[i] == COLON else -1


def field_value(p: bytes, colon: int, n: int) -> int:
    """Where the value after the colon at ``p[colon]`` starts, past its leading spaces
    (-1 if ``colon`` is)."""
    if colon < 0:
        return -1
    i = colon + 1
    while i < n and (p[i] == SP or p[i] == HT):
        i += 1
    return i


def field_value_end(p: bytes, i: int, n: int) -> int:
    """Where the value at ``p[i]`` ends, at the CRLF ending its line; -1 if another
    byte ends it (or ``i`` is -1)."""
    if i < 0:
        return -1
    classes = CHAR_CLASSES
    while i < n and classes[p[i]] & VALUE:
        i += 1
    return i if i + 1 < n and p[i] == CR and p[i + 1] == LF else -1


def plain_request(data: bytes) -> PlainRequest | None:
    """(method, target, headers, flags, keep-alive, version) if ``data`` is exactly one
    plain request head with no body; None if httptools is to read it. A value's
    leading spaces are dropped, its trailing ones kept, as llhttp does."""
    p = data  # compiled: a pointer to the bytes (plain_head.pxd), as is classes
    classes = CHAR_CLASSES
    n = len(data)
    if n > HEAD_LIMIT:
        return None
    method = plain_method(p, n)
    if method is None:
        return None
    i = len(method) + 1
    start = i
    while i < n and classes[p[i]] & TARGET:
        i += 1
    if i == start or p[start] != SLASH or i - start > URL_LIMIT or i >= n or p[i] != SP:
        return None
    target = data[start:i]
    if i + 11 > n or not starts(p, i + 1, b"HTTP/1.") or p[i + 9] != CR or p[i + 10] != LF:
        return None
    if p[i + 8] == ONE:
        http11 = True
    elif p[i + 8] == ZERO:
        http11 = False
    else:
        return None
    i += 11
    headers: list[tuple[bytes, bytes]] = []
    flags = 0
    keep_alive = http11
    connection_seen = False
    size = len(target)
    count = 0
    while True:
        if i + 1 >= n:
            return None  # the head does not end
        if p[i] == CR:
            if p[i + 1] != LF or i + 2 != n:
                return None  # a stray CR, or bytes after the head (a body, a request)
            break
        start = i
        name_end = field_name_end(p, i, n)
        value = field_value(p, name_end, n)
        i = field_value_end(p, value, n)
        if i < 0:
            return None
        count += 1
        size += name_end - start + i - value + LINE_OVERHEAD
        if count > HEADER_LIMIT or size > HEAD_LIMIT:
            return None
        kind = name_kind(p, start, name_end - start)
        if kind == CONNECTION:
            keep = connection_options(p, value, i, http11)
            if keep < 0 or connection_seen:
                return None
            connection_seen = True
            keep_alive = keep == 1
            flags |= HOP_FLAG
        elif kind == KEEP_ALIVE:
            flags |= HOP_FLAG
        elif kind < 0 or kind & flags & HOST_FLAG:
            return None  # framing, another hop-by-hop header, or a second Host
        else:
            flags |= kind
        headers.append((data[start:name_end], data[value:i]))
        i += 2
    return method, target, headers, flags, keep_alive, "1.1" if http11 else "1.0"


def plain_response(data: bytes) -> int:
    """``status << 1 | keep-alive`` if ``data`` is exactly one plain HTTP/1.1 response
    with a ``Content-Length`` body; 0 if httptools is to read it."""
    p = data
    classes = CHAR_CLASSES
    n = len(data)
    if n < 17 or data[:9] != b"HTTP/1.1 " or p[12] != SP:
        return 0
    status = 0
    for i in range(9, 12):
        if p[i] < ZERO or p[i] > NINE:
            return 0
        status = status * 10 + p[i] - ZERO
    if status < 200 or status in NO_BODY_STATUS:
        return 0  # an interim answer, or one without a body
    i = 13
    while i < n and classes[p[i]] & VALUE:  # the reason phrase
        i += 1
    if i + 1 >= n or p[i] != CR or p[i + 1] != LF:
        return 0
    i += 2
    length = -1
    keep_alive = True
    connection_seen = False
    count = 0
    while True:
        if i + 1 >= n or i > HEAD_LIMIT:
            return 0
        if p[i] == CR:
            if p[i + 1] != LF:
                return 0
            i += 2
            break
        start = i
        name_end = field_name_end(p, i, n)
        value = field_value(p, name_end, n)
        i = field_value_end(p, value, n)
        if i < 0:
            return 0
        count += 1
        if count > HEADER_LIMIT:
            return 0
        kind = name_kind(p, start, name_end - start)
        if kind == CONTENT_LENGTH:
            if length >= 0:
                return 0
            length = 0
            digits = value
            while digits < i and ZERO <= p[digits] <= NINE:
                if digits - value == MAX_LENGTH_DIGITS:
                    return 0  # before the sum could overflow a C integer
                length = length * 10 + p[digits] - ZERO
                digits += 1
            rest = digits
            while rest < i and (p[rest] == SP or p[rest] == HT):
                rest += 1
            if digits == value or rest != i:
                return 0
        elif kind == CONNECTION:
            keep = connection_options(p, value, i, True)
            if keep < 0 or connection_seen:
                return 0
            connection_seen = True
            keep_alive = keep == 1
        elif kind in (NOT_PLAIN, KEEP_ALIVE):
            return 0  # KEEP_ALIVE: this hop's alone, removed as the head is rebuilt
        i += 2
    if length < 0 or n != i + length:
        return 0
    return status << 1 | (1 if keep_alive else 0)
