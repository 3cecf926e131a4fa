"""One request through the sidecar, from its headers to the end of its response.

The exchange drives one request; it decides nothing about connections or retries
itself. ``start`` applies inbound rate limiting, resolves route, shard and hash key (a
refusal becomes a named 4xx), asks the cluster's pool to admit the request (the
``max_requests`` breaker) and arms the overall timeout. ``attempt`` picks an endpoint
and asks the pool for a connection: it uses the idle one the pool gives, has the
listener's connector open one in the slot the pool reserved, or waits until the pool
hands it one (``max_connections``, ``max_pending_requests``). The response streams
back through ``response_head/body/done``. Each attempt ends in ``end_attempt``, which
feeds endpoint load, latency and outlier detection and gives the connection back
through the connector. Whether to try again is ``resilience.retry.decide_retry``'s
answer; if not, the sidecar answers itself with the reason in ``x-meshlet-error``.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING

from meshlet.proxy.cluster import Cluster, Target
from meshlet.proxy.headers import (
    CHUNKED,
    HAS_ERROR,
    HAS_HOP_BY_HOP,
    HAS_HOST,
    HAS_LENGTH,
    HAS_TRACE,
    TRACEPARENT,
    TRACESTATE,
    chunk,
    delimited_by_close,
    forward_headers,
    header_value,
    raw_headers,
)
from meshlet.proxy.partition import Refusal
from meshlet.proxy.pool import OPEN, QUEUED, USE
from meshlet.proxy.request_view import RequestView
from meshlet.proxy.resilience.retry import (
    BREAKER_OPEN,
    BUDGET_EXHAUSTED,
    NOT_RETRYABLE,
    REFUSAL,
    RETRY,
    backoff_delay,
    decide_retry,
)

if TYPE_CHECKING:  # cimported by the compiled build (exchange.pxd)
    from meshlet.proxy.connector import Connector
    from meshlet.proxy.http import DownstreamHttp
    from meshlet.proxy.lb.base import EndpointState
    from meshlet.proxy.pool import ConnectionPool
    from meshlet.proxy.routing import RouteChoice
    from meshlet.proxy.tracing import SpanContext
    from meshlet.proxy.upstream import UpstreamHttp

ERROR_HEADER = b"x-meshlet-error"
LOCAL_APP_REFUSED = "local_app_refused"
REPLAY_LIMIT = 64 * 1024
BUFFER_HIGH = 1024 * 1024
ERROR_STATUS = {"connect_timeout": 504, "upstream_reset": 502, "request_timeout": 504,
                "per_try_timeout": 504}
# What a request's own traceparent replaces, and with it a tracestate when the caller's
# traceparent was not valid (it belongs to that trace: W3C Trace Context 3.3.1).
REPLACED_TRACE = frozenset({TRACEPARENT})
RESTARTED_TRACE = frozenset({TRACEPARENT, TRACESTATE})
# A peer sidecar's own errors that say the request never reached its app.
PEER_NOT_PROCESSED = frozenset({LOCAL_APP_REFUSED.encode()})

# How the response body reaches the client: not at all, as received, re-chunked, until
# close, or PASS: the upstream's bytes relayed untouched, head included.
FRAMING_NONE, FRAMING_RAW, FRAMING_CHUNKED, FRAMING_UNTIL_CLOSE, FRAMING_PASS, \
    FRAMING_PASS_UNTIL_CLOSE = range(6)


def removes_any(route: RouteChoice, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the route removes (or replaces) a header the request has."""
    lengths = route.removed_lengths
    if not lengths:
        return False
    for name, _ in headers:  # noqa: SIM110 (compiled cpdef functions take no generators)
        if len(name) in lengths and name.lower() in route.remove_headers:
            return True
    return False


class Exchange:
    __slots__ = (
        "attempt_time",
        "body_done",
        "chunked",
        "cluster",
        "connect_task",
        "connector",
        "conns",
        "deadline",
        "discarding",
        "down",
        "finished",
        "flags",
        "framing",
        "got_response_bytes",
        "grpc_status",
        "headers",
        "interim",
        "is_head",
        "keep_alive",
        "last_error",
        "listener",
        "loop",
        "method",
        "pending",
        "pending_size",
        "raw_head",
        "reason",
        "relay",
        "relay_first",
        "relay_head",
        "response_started",
        "retrying",
        "sent",
        "sent_size",
        "start_time",
        "state",
        "status",
        "target",
        "trace",
        "tried",
        "try_deadline",
        "until_close",
        "upstream",
        "url",
        "version",
        "waiting",
    )

    def __init__(self, down: DownstreamHttp, method: bytes, url: bytes,
                 headers: list[tuple[bytes, bytes]], keep_alive: bool, version: str,
                 flags: int = HAS_HOP_BY_HOP, raw_head: bytes = b"") -> None:
        self.down = down
        # The head as received, when it was plain HTTP/1.1 (plain_head.py): relayed as
        # it is unless something in it must change.
        self.raw_head = raw_head
        self.flags = flags
        self.listener = down.listener
        self.loop = down.loop
        self.method = method
        self.url = url
        self.headers = headers
        self.keep_alive = keep_alive
        self.version = version
        self.chunked = bool(flags & CHUNKED)
        # Relay the response as received when the client speaks HTTP/1.1 (so it reads
        # any framing the upstream chose), keeps the connection (so no `connection:
        # close` needs adding) and no HEAD special case applies.
        self.relay = version == "1.1" and keep_alive and method != b"HEAD"
        self.relay_head: tuple[bytes, int] | None = None  # (new head, bytes it replaces)
        self.relay_first = b""
        self.is_head = method == b"HEAD"
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.sent: list[bytes] | None = []
        self.sent_size = 0
        self.body_done = False
        self.upstream: UpstreamHttp | None = None
        self.cluster: Cluster | None = None
        self.target: Target | None = None
        self.tried: list[EndpointState] = []
        self.state: EndpointState | None = None
        self.deadline = 0.0
        self.try_deadline = 0.0  # 0: no per-try deadline armed
        self.start_time = perf_counter()
        self.attempt_time = 0.0
        self.response_started = False
        self.status = 0
        self.framing = FRAMING_NONE
        self.finished = False
        self.got_response_bytes = False
        self.grpc_status = -1  # a gRPC call's status, once known (metrics, access log)
        self.interim = False
        self.discarding = False
        self.until_close = False  # a body re-framed as chunked that the upstream's close ends
        self.connect_task: asyncio.Task[None] | None = None
        self.last_error = ""
        self.retrying = False
        self.reason = ""
        self.waiting = False
        self.trace: SpanContext | None = None  # with tracing on (listener.tracer)
        # Who opens this request's connections and which pool keeps them: the
        # listener's, or its HTTP/2 ones for a gRPC call on an ``http`` listener.
        self.connector: Connector = self.listener.connector
        self.conns: ConnectionPool | None = None

    def __repr__(self) -> str:
        return (f"<Exchange {self.method.decode()} {self.url.decode(errors='replace')} "
                f"status={self.status} tried={len(self.tried)} finished={self.finished}>")

    # -- request side -----------------------------------------------------------------

    def start(self) -> None:
        listener = self.listener
        if listener.tracer is not None:
            self.trace = listener.begin_trace(self)
        self.cluster = cluster = listener.cluster
        if cluster is None:
            self.local_reply(503, "no_route")
            return
        self.conns = cluster.pool if self.connector is listener.connector \
            else cluster.h2_pool()
        if listener.intentions is not None:
            why = listener.denied(self.down.source, self)
            if why:
                self.local_reply(403, "intention_denied", why)
                return
        now = cluster.clock()
        limiter = listener.rate_limiter
        if limiter is not None and not limiter.take(now):
            self.local_reply(429, "rate_limited")
            return
        view = None
        if cluster.needs_view:
            view = RequestView.from_raw(self.method, self.url, self.headers, self.down.peer_ip)
        resolved = cluster.resolve(view, self.method, self.url)
        if isinstance(resolved, Refusal):
            self.local_reply(resolved.status, resolved.reason, resolved.message)
            return
        if not cluster.pool.admit_request():
            listener.count_breaker("max_requests")
            self.local_reply(503, "breaker_open", "too many active requests")
            return
        self.target = target = resolved
        cluster.budget.record_request(now)
        self.build_head(target)
        self.deadline = now + target.timeout
        listener.timed.add(self)
        self.attempt()

    def build_head(self, target: Target) -> None:
        route = target.route
        head = self.raw_head
        if head and self.trace is None and not self.flags & HAS_HOP_BY_HOP \
                and (route is None or not removes_any(route, self.headers)):
            # A plain HTTP/1.1 head as received (plain_head.py), with the route's headers.
            if route is not None and route.set_lines:
                head = b"%b%b\r\n" % (head[:-2], route.set_lines)
            self.queue_head(head)
            return
        parts = [self.method, b" ", self.url, b" HTTP/1.1\r\n"]
        drop = route.remove_headers if route else frozenset()
        trace = self.trace
        if trace is not None:
            if self.flags & HAS_TRACE:
                drop = drop | (REPLACED_TRACE if trace.parent_id else RESTARTED_TRACE)
            parts += (b"traceparent: ", trace.header, b"\r\n")
        forward_headers(parts, self.headers, drop, self.flags)
        if route is not None:
            for name, value in route.set_headers:
                parts += (name, b": ", value, b"\r\n")
        if self.version != "1.1" and not self.flags & HAS_HOST:
            parts += (b"host: ", self.listener.destination.encode(), b"\r\n")
        if self.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        self.queue_head(b"".join(parts))

    def queue_head(self, head: bytes) -> None:
        """The upstream request's head goes first, before any body already received."""
        self.pending.insert(0, head)
        self.pending_size += len(head)
        if self.sent is not None:
            self.sent.insert(0, head)
            self.sent_size += len(head)

    def attempt(self) -> None:
        cluster = self.cluster
        assert cluster is not None and self.target is not None
        state = cluster.pick(self.target, self.tried)
        if state is None:
            reason = self.last_error or "no_healthy_endpoint"
            if reason.startswith(("status_", "grpc_")):  # retrying, and the endpoints ran out
                self.local_reply(503, "no_healthy_endpoint",
                                 f"no endpoint left to retry after {reason}")
                return
            self.local_reply(ERROR_STATUS.get(reason, 503), reason)
            return
        self.state = state
        self.tried.append(state)
        self.acquire(state, True)

    def acquire(self, state: EndpointState, reuse: bool) -> None:
        """Do what the pool answers: use an idle connection, open one, wait or refuse."""
        action, conn = self.conns.acquire(state.key, self, reuse)  # type: ignore[union-attr]
        if action == USE:
            self.attach(conn)
        elif action == OPEN:
            if conn is not None:  # at the limit: the oldest idle connection makes room
                conn.close()
            self.start_connect()
        elif action == QUEUED:
            self.waiting = True  # until the pool hands over a connection or a slot
        else:
            self.listener.count_breaker("max_pending_requests")
            self.local_reply(503, "breaker_open", "too many pending requests")

    def start_connect(self) -> None:
        """Open a connection to this attempt's endpoint in a slot the pool reserved."""
        self.waiting = False
        assert self.state is not None  # set by attempt(), kept while the request waits
        self.connect_task = self.loop.create_task(self.connect(self.state))

    async def connect(self, state: EndpointState) -> None:
        """The connector opens the connection; this attempt uses it, or gives it back
        if the request finished meanwhile."""
        cluster = self.cluster
        assert cluster is not None and self.conns is not None
        connector = self.connector
        self.attempt_time = perf_counter()
        conn = connector.upstream(self.conns, state.key)
        reason = await connector.open(conn, state.endpoint, cluster.connect_timeout)
        if reason:
            self.connect_failed(state, reason)
        elif self.finished:
            connector.release(conn, cluster.clock())
        else:
            self.attach(conn)

    def connect_failed(self, state: EndpointState, reason: str) -> None:
        self.listener.count(self.listener.metrics.connect_errors, reason)
        self.listener.observe_endpoint(state, 503, 0.0)
        if self.cluster is not None and self.cluster.record_outcome(state, True):
            self.listener.count_ejection()
        if self.finished:
            return
        self.state = None
        if self.listener.direction == "inbound":
            self.local_reply(503, LOCAL_APP_REFUSED)
            return
        self.last_error = reason
        self.retry_or_fail(reason, ERROR_STATUS.get(reason, 503), not_processed=True)

    def attach(self, conn: UpstreamHttp) -> None:
        conn.exchange = self
        self.upstream = conn
        self.waiting = False
        state = self.state
        if state is None or state.key != conn.key:  # handed over while pending
            self.state = state = self.cluster.states.get(conn.key)  # type: ignore[union-attr]
        if state is not None:
            state.start()
        self.attempt_time = perf_counter()
        per_try = self.cluster.settings.per_try_timeout  # type: ignore[union-attr]
        if per_try > 0:
            self.try_deadline = self.cluster.clock() + per_try  # type: ignore[union-attr]
        conn.send(b"".join(self.pending))
        self.pending = []
        self.pending_size = 0
        self.down.resume_reading("buffer")
        if self.down.write_paused:
            conn.set_reading(False)

    def emit(self, data: bytes) -> None:
        if self.finished:
            return
        if self.sent is not None:
            self.sent_size += len(data)
            if self.sent_size > REPLAY_LIMIT:
                self.sent = None
            else:
                self.sent.append(data)
        if self.upstream is not None:
            self.upstream.send(data)
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > BUFFER_HIGH:
                self.down.pause_reading("buffer")

    def request_body(self, body: bytes) -> None:
        if body:  # an empty chunk would end a chunked body (HTTP/2 sends empty DATA)
            self.emit(chunk(body) if self.chunked else body)

    def request_done(self) -> None:
        self.body_done = True
        if self.chunked:
            self.emit(b"0\r\n\r\n")

    # -- retries ----------------------------------------------------------------------

    def retry_verdict(self, not_processed: bool, opted_in: bool = False) -> int:
        """``decide_retry``'s answer for this request; a refusal is counted, and a first
        retry claims its place under the retry breaker. ``opted_in``: the outcome is one
        ``retry_on`` names for any method (a gRPC status: every call is a POST)."""
        cluster = self.cluster
        if cluster is None or self.target is None:
            return NOT_RETRYABLE
        pool = cluster.pool
        verdict = decide_retry(
            attempts=len(self.tried), retries=cluster.retries,
            replayable=self.sent is not None and not self.response_started,
            endpoint_left=cluster.untried(self.target, self.tried), method=self.method,
            not_processed=not_processed,
            non_idempotent=opted_in or cluster.settings.retry_non_idempotent,
            budget=cluster.budget,
            now=cluster.clock(), breaker_room=self.retrying or pool.retry_room())
        if verdict == RETRY:
            if not self.retrying:
                self.retrying = True
                pool.retry_started()
        elif verdict == BUDGET_EXHAUSTED:
            self.listener.count_budget_exhausted()
        elif verdict == BREAKER_OPEN:
            self.listener.count_breaker("max_retries")
        return verdict

    def retry_or_fail(self, reason: str, status: int, not_processed: bool) -> None:
        verdict = self.retry_verdict(not_processed)
        if verdict == RETRY:
            self.schedule_retry(reason)
        elif verdict == NOT_RETRYABLE:
            self.local_reply(status, reason)
        else:
            refusal = REFUSAL[verdict]
            self.local_reply(status, refusal, f"{reason}; not retried: {refusal}")

    def schedule_retry(self, reason: str) -> None:
        cluster = self.cluster
        assert cluster is not None
        self.listener.count(self.listener.metrics.retries, reason)
        self.pending = list(self.sent or ())
        self.pending_size = self.sent_size
        self.got_response_bytes = False
        s = cluster.settings
        delay = backoff_delay(len(self.tried), s.retry_backoff, s.retry_backoff_max,
                              cluster.rng)
        if delay < 0.001:
            self.attempt()
        else:
            self.loop.call_later(delay, self.attempt_if_live)

    def attempt_if_live(self) -> None:
        if not self.finished:
            self.attempt()

    # -- response side ----------------------------------------------------------------

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      flags: int) -> None:
        if 100 <= status < 200:  # never 101: the upstream refused that as unasked
            self.interim = True
            if self.version == "1.1":  # an HTTP/1.0 client gets no 1xx (RFC 9110, 15.2)
                parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
                forward_headers(parts, headers, flags=flags)  # 103's Link headers
                parts.append(b"\r\n")
                self.down.write(b"".join(parts))
            return
        if self.is_head and self.upstream is not None:
            self.upstream.no_body_follows()
        if status >= 429 and self.should_retry_response(status, headers, flags):
            self.discarding = True
            self.status = status
            return
        self.response_started = True
        self.status = status
        if self.is_head or status in (204, 304):
            self.framing = FRAMING_NONE
        elif flags & CHUNKED:
            self.framing = FRAMING_CHUNKED
        elif flags & HAS_LENGTH:
            self.framing = FRAMING_RAW
        elif self.version == "1.1":
            self.framing = FRAMING_CHUNKED
            self.until_close = True  # the upstream's close ends it: the last chunk then
        else:
            self.framing = FRAMING_UNTIL_CLOSE
            self.keep_alive = False
        parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        forward_headers(parts, headers, flags=flags)
        if self.framing == FRAMING_CHUNKED:
            parts.append(b"transfer-encoding: chunked\r\n")
        if not (self.keep_alive and self.down.keep_open):
            self.keep_alive = False
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self.down.write(b"".join(parts))

    def relayed_head(self, status: int, data: bytes) -> None:
        """The whole head of a relayed response, not a 1xx, arrived (at the start of
        ``data``)."""
        if status >= 429:
            headers, flags = raw_headers(data)
            if self.should_retry_response(status, headers, flags):
                self.discarding = True
                self.status = status
                return
        self.response_started = True
        self.status = status
        self.framing = FRAMING_PASS
        self.relay_first = data  # kept to tell, if the upstream closes, how the body ends
        if not self.down.keep_open:  # draining: the client must be told to go
            self.keep_alive = False
            end = data.find(b"\r\n\r\n")
            headers, flags = raw_headers(data)
            parts = [data[:data.find(b"\r\n") + 2]]
            forward_headers(parts, headers, flags=flags | HAS_HOP_BY_HOP)
            if flags & CHUNKED:
                parts.append(b"transfer-encoding: chunked\r\n")
            parts.append(b"connection: close\r\n\r\n")
            self.relay_head = (b"".join(parts), end + 4)

    def should_retry_response(self, status: int, headers: list[tuple[bytes, bytes]],
                              flags: int) -> bool:
        if (status < 500 and status != 429) or self.listener.direction != "outbound":
            return False
        cluster = self.cluster
        assert cluster is not None
        error = header_value(headers, ERROR_HEADER) if flags & HAS_ERROR else None
        if error in PEER_NOT_PROCESSED:
            not_processed = True
        elif status in cluster.settings.retry_on or error == b"upstream_reset":
            not_processed = False
        else:
            return False
        if self.retry_verdict(not_processed) != RETRY:
            return False  # pass the upstream's own answer on instead
        self.last_error = error.decode() if error else f"status_{status}"
        return True

    def should_retry_grpc(self, code: int) -> bool:
        """Whether a trailers-only gRPC answer with status ``code`` is to be retried: one
        ``retry_on`` names (``unavailable``, ``resource-exhausted``…), on an outbound
        listener, when a retry is allowed."""
        cluster = self.cluster
        if cluster is None or self.listener.direction != "outbound" \
                or code not in cluster.settings.retry_on_grpc:
            return False
        if self.retry_verdict(False, True) != RETRY:
            return False
        self.last_error = f"grpc_status_{code}"
        return True

    def response_trailers(self, trailers: list[tuple[bytes, bytes]],
                          upstream_keep_alive: bool) -> None:
        """The end of a response with trailers (from an HTTP/2 upstream: a gRPC status):
        they close a chunked body; another framing has no place for them."""
        if self.framing == FRAMING_CHUNKED and not self.discarding and not self.finished:
            parts = [b"0\r\n"]
            for name, value in trailers:
                parts += (name, b": ", value, b"\r\n")
            parts.append(b"\r\n")
            self.down.write(b"".join(parts))
            self.framing = FRAMING_RAW  # the body's end is written
        self.response_done(upstream_keep_alive)

    def response_body(self, body: bytes) -> None:
        if self.discarding or self.finished:
            return
        if self.framing == FRAMING_CHUNKED:
            self.down.write(chunk(body))
        else:
            self.down.write(body)

    def response_done(self, upstream_keep_alive: bool) -> None:
        if self.finished:
            return
        if self.interim:
            self.interim = False
            return
        if self.discarding:
            self.discarding = False
            self.end_attempt(self.status, upstream_keep_alive and self.body_done)
            self.schedule_retry(self.last_error)
            return
        if self.framing == FRAMING_CHUNKED:
            self.down.write(b"0\r\n\r\n")
        elif self.framing == FRAMING_PASS and not upstream_keep_alive:
            self.keep_alive = False  # the relayed head told the client the same
        self.end_attempt(self.status, upstream_keep_alive and self.body_done)
        self.finish()

    def upstream_lost(self, conn: UpstreamHttp) -> None:
        """The upstream connection closed while this exchange was using it."""
        if self.finished:
            return
        if self.framing == FRAMING_PASS and self.response_started \
                and delimited_by_close(self.relay_first, self.status):
            self.framing = FRAMING_PASS_UNTIL_CLOSE
            self.keep_alive = False  # the client reads the body until we close
        if self.discarding:  # an answer being retried, its end the close: retry it
            self.discarding = False
            self.end_attempt(self.status, False)
            self.schedule_retry(self.last_error)
            return
        if self.response_started and (self.until_close or self.framing in (
                FRAMING_UNTIL_CLOSE, FRAMING_PASS_UNTIL_CLOSE)):
            if self.until_close:
                self.down.write(b"0\r\n\r\n")
            self.end_attempt(self.status, False)
            self.finish()
            return
        if self.response_started:
            self.end_attempt(502, False)
            self.listener.count(self.listener.metrics.local_replies, "upstream_reset")
            self.status, self.reason = 502, "upstream_reset"
            self.finish()
            self.down.close()
            return
        replayable = self.sent is not None and not self.got_response_bytes
        if replayable and conn.reused and self.state is not None:
            # A pooled connection the peer had already closed: nothing was processed.
            state = self.state
            self.end_attempt(None, False)
            self.listener.count(self.listener.metrics.retries, "stale_connection")
            self.pending = list(self.sent)  # type: ignore[arg-type]
            self.pending_size = self.sent_size
            self.state = state
            self.acquire(state, False)  # a new connection: the idle ones may be stale too
            return
        self.end_attempt(502, False)
        self.last_error = "upstream_reset"
        if self.listener.direction == "outbound" and replayable:
            self.retry_or_fail("upstream_reset", 502, not_processed=False)
        else:
            self.local_reply(502, "upstream_reset")

    def on_try_timeout(self) -> None:
        """Called by the listener's ticker once ``try_deadline`` has passed."""
        self.try_deadline = 0.0
        if self.finished or self.upstream is None or self.response_started:
            return
        self.end_attempt(504, False)
        self.last_error = "per_try_timeout"
        self.retry_or_fail("per_try_timeout", 504, not_processed=False)

    def on_timeout(self) -> None:
        """Called by the listener's ticker once ``deadline`` has passed."""
        self.listener.timed.discard(self)
        if self.finished:
            return
        if self.response_started:
            self.end_attempt(504, False)
            self.status, self.reason = 504, "request_timeout"
            self.listener.count(self.listener.metrics.local_replies, "request_timeout")
            self.finish()
            self.down.close()
        else:
            self.local_reply(504, "request_timeout")

    # -- completion -------------------------------------------------------------------

    def end_attempt(self, status: int | None, reusable: bool) -> None:
        """Close the books on the current attempt: load, latency, outlier, connection."""
        self.try_deadline = 0.0
        conn = self.upstream
        self.upstream = None
        if conn is not None:  # its write buffer is no longer this client's to wait on
            self.down.resume_reading("upstream_buffer")
        state = self.state
        self.state = None
        cluster = self.cluster
        now = cluster.clock() if cluster is not None else 0.0
        if conn is not None:
            conn.exchange = None
            if reusable and not conn.closed and cluster is not None:
                conn.reused = True
                self.connector.release(conn, now)
            else:
                conn.close()
        if state is None or cluster is None or conn is None:
            return
        rtt = perf_counter() - self.attempt_time
        ok = status is not None and status < 500
        state.finish(rtt if ok and cluster.tracks_latency else None, now)
        if status is not None:
            self.listener.observe_endpoint(state, status, rtt)
            if cluster.record_outcome(state, not ok):
                self.listener.count_ejection()

    def local_reply(self, status: int, reason: str, detail: str = "") -> None:
        """Answer with an error the sidecar made itself; the reason travels in a header."""
        if self.finished:
            return
        if self.state is not None and self.upstream is not None:
            self.end_attempt(None, False)
        if self.response_started:
            self.finish()
            self.down.close()
            return
        self.listener.count(self.listener.metrics.local_replies, reason)
        self.status = status
        self.reason = reason
        body = (f"{reason}: {detail}\n" if detail else f"{reason}\n").encode()
        keep = self.keep_alive and self.down.keep_open
        self.keep_alive = keep
        self.down.write(
            b"HTTP/1.1 %d %b\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"x-meshlet-error: %b\r\n%b\r\n%b" % (
                status, reason.encode(), len(body), reason.encode(),
                b"" if keep else b"connection: close\r\n", body))
        self.finish()

    def finish(self) -> None:
        self.finished = True
        self.release_claims()
        if self.upstream is not None:
            self.end_attempt(None, False)
        listener = self.listener
        listener.finished_with(self, perf_counter() - self.start_time, self.status,
                               self.reason, self.grpc_status,
                               listener.peer(self.down.source, self.tried), self.trace)
        self.pending = []
        self.sent = None
        self.down.exchange_finished(self)

    def release_claims(self) -> None:
        """Give back what the request holds: its deadline, a connection being opened,
        its places under the pool's breakers and in its queue."""
        self.listener.timed.discard(self)
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        cluster = self.cluster
        if cluster is None:
            return
        pool = cluster.pool
        if self.target is not None:
            pool.request_done()
            self.target = None
        if self.retrying:
            pool.retry_done()
            self.retrying = False
        if self.waiting:
            self.waiting = False
            self.conns.cancel(self)  # type: ignore[union-attr]

    def abort(self) -> None:
        """The client went away: drop the upstream side without reusing it."""
        if self.finished:
            return
        self.finished = True
        self.release_claims()
        self.end_attempt(None, False)
        self.listener.active_requests -= 1

