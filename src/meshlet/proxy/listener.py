"""What every connection on one listener shares: its cluster, connector, metrics, rate
limiter, access log and drain state, and the clock its connections' head deadlines
read (set by the sidecar's ticker, so a request costs no clock call for them)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from meshlet.intention_rules import Intentions
from meshlet.observe.access_log import access_line, request_path
from meshlet.observe.hot_metrics import add, observe_attempt, observe_row
from meshlet.observe.proxy_metrics import ProxyMetrics
from meshlet.observe.request_labels import duration_labels, request_labels, source_label
from meshlet.proxy import connector as connector_module
from meshlet.proxy.cluster import Cluster
from meshlet.proxy.config import IntentionsConfig, ListenerConfig
from meshlet.proxy.headers import HAS_TRACE, TRACEPARENT, TRACESTATE, header_value
from meshlet.proxy.request_view import RequestView
from meshlet.proxy.resilience.token_bucket import TokenBucket
from meshlet.proxy.tracing import CLIENT, SERVER, SpanContext, parse_traceparent, record

if TYPE_CHECKING:  # cimported by the compiled build (listener.pxd)
    from meshlet.proxy.connector import Connector
    from meshlet.proxy.lb.base import EndpointState

access_log = logging.getLogger("meshlet.access")
HEAD_SWEEP_INTERVAL = 0.25  # how often connections are checked for a late head (s)
MAX_LABEL_KEYS = 4096  # cached label tuples per listener, cleared when full


class ListenerState:
    def __init__(self, config: ListenerConfig, cluster: Cluster | None, metrics: ProxyMetrics,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.direction = config.direction
        self.destination = config.name
        self.cluster = cluster
        self.metrics = metrics
        self.loop = loop
        # Opens and closes upstream connections as the cluster's pool decides. Made
        # through its module: a compiled build cimports the class (listener.pxd).
        self.connector: Connector = connector_module.Connector(loop)
        self._h2_connector: Connector | None = None  # see h2_connector
        self.connections: set[Any] = set()
        self.active_requests = 0
        self.draining = False
        self.server: asyncio.AbstractServer | None = None
        self.port = config.port
        self.active_gauge = metrics.active_connections.labels(config.direction, config.name)
        self.rate_limiter: TokenBucket | None = None
        # Inbound: who may call (None: everyone), decisions by caller for L4 rules,
        # and the sidecar's TLS settings, which say how a caller's identity reads.
        self.intentions: Intentions | None = None
        self.decisions: dict[str, Any] = {}
        self.tls: Any = None
        self.timed: set[Any] = set()  # exchanges with a deadline, checked by the ticker
        self.log_mode = "errors"
        self.head_timeout = float(config.head_timeout)
        self.idle_timeout = float(config.idle_timeout)
        self.detect_timeout = float(config.detect_timeout)
        self.max_connections = int(config.max_connections)
        self.now = time.monotonic()  # the ticker's clock (sidecar.tick), TICK-coarse
        self.next_head_sweep = 0.0
        self.sweeps_heads = config.protocol != "tcp"
        # Tracing, set by the sidecar from its own service's settings (None: off).
        # The sidecar's own service and instance, set by the sidecar: the source of
        # outbound requests, the destination instance of inbound ones.
        self.service = ""
        self.instance = ""
        self.inbound = self.direction == "inbound"
        self.tracer: Any = None
        self.exporter: Any = None
        self.span_kind = SERVER if self.direction == "inbound" else CLIENT
        # Series found once, not per request: the request counter's cell and duration
        # histogram's row by (status, reason, caller or endpoint), the endpoint rows by
        # endpoint (observe/hot_metrics.py).
        self._request_labels: dict[tuple[int, str, str, int], tuple[Any, Any]] = {}
        self._sources: set[str] = set()  # inbound callers named in labels (bounded)
        self._endpoint_rows: dict[str, list[float]] = {}  # see configure
        # The hot metrics held here as well: typed in listener.pxd, so the compiled
        # build calls them directly.
        self._requests = metrics.requests
        self._duration = metrics.duration
        self._endpoint_stats = metrics.endpoints
        self.configure()

    def __repr__(self) -> str:
        return (f"<Listener {self.direction} {self.destination} :{self.port} "
                f"conns={len(self.connections)} active={self.active_requests}>")

    def configure(self) -> None:
        """Pick up settings that live on the listener (rate limit, access log)."""
        self._endpoint_rows = {}  # endpoints may have left: rebuilt as traffic flows
        self._request_labels = {}
        if self.cluster is None:
            return
        s = self.cluster.settings
        self.log_mode = s.access_log
        if self.direction == "inbound" and s.rate_limit_rps > 0:
            burst = s.rate_limit_burst or max(int(s.rate_limit_rps), 1)
            limiter = self.rate_limiter
            if limiter is None or (limiter.rate, limiter.burst) != (s.rate_limit_rps, burst):
                self.rate_limiter = TokenBucket(s.rate_limit_rps, burst, self.cluster.clock())
        else:
            self.rate_limiter = None

    def set_intentions(self, config: IntentionsConfig | None) -> None:
        """Enforce ``config`` from the next request (HTTP) or connection (TCP)."""
        self.intentions = None if config is None else Intentions(
            self.destination, config.intentions, config.default_policy)
        self.decisions = {}

    def h2_connector(self) -> Connector:
        """The connector for calls that must go in HTTP/2 (gRPC, known by its
        content-type): the listener's own if it speaks HTTP/2, else one made at the
        first such call, with the same mesh TLS and peer identity."""
        from meshlet.proxy.h2_upstream import H2Connector  # it imports this module's peers

        if isinstance(self.connector, H2Connector):
            return self.connector
        made = self._h2_connector
        if made is None:
            made = self._h2_connector = H2Connector(self.loop)
        made.tls = self.connector.tls
        made.identity = self.connector.identity
        return made

    def denied(self, source: str, ex: Any = None) -> str:
        """"" if ``source`` (a service, or "" for a caller without an identity) may make
        ``ex`` (a request; None: a connection), else why not; a refusal is counted."""
        rules = self.intentions
        if rules is None:
            return ""
        if rules.l7 and ex is not None:
            view = RequestView.from_raw(ex.method, ex.url, ex.headers, ex.down.peer_ip)
            decision = rules.decide(source, view.method, view.path, view.headers)
        else:
            cached = self.decisions.get(source)
            if cached is None:
                cached = self.decisions[source] = rules.decide(source)
            decision = cached
        if decision.allowed:
            return ""
        self.metrics.intention_denied.labels(self.direction, self.destination,
                                             source or "-").inc()
        return (f"{source or 'a caller without an identity'} may not call "
                f"{self.destination}: {decision.why}")

    # -- metrics ----------------------------------------------------------------------

    def count(self, what: Any, reason: str) -> None:
        what.labels(self.direction, self.destination, reason).inc()

    def count_breaker(self, limit: str) -> None:
        self.metrics.breaker_overflows.labels(self.direction, self.destination, limit).inc()

    def count_budget_exhausted(self) -> None:
        self.metrics.budget_exhausted.labels(self.direction, self.destination).inc()

    def count_ejection(self) -> None:
        self.metrics.ejections.labels(self.direction, self.destination).inc()
        if self.cluster is not None:
            self.metrics.ejected.labels(self.direction, self.destination).set(
                self.cluster.ejected_count())

    def observe_endpoint(self, state: EndpointState, status: int, seconds: float) -> None:
        row = self._endpoint_rows.get(state.endpoint.id)
        if row is None:  # kept until configure, as label_pair's are
            row = self._endpoint_rows[state.endpoint.id] = self._endpoint_stats.row(
                (self.direction, self.destination, state.endpoint.id))
        observe_attempt(row, status, seconds)

    def finished(self, ex: Any, seconds: float) -> None:
        """The books on a request or tunnel that ended, ``seconds`` after it began."""
        self.finished_with(ex, seconds, ex.status, ex.reason, ex.grpc_status,
                           self.peer(ex.down.source, ex.tried), ex.trace)

    def peer(self, source: str, tried: list[EndpointState]) -> str:
        """A finished request's peer label: the caller's service inbound, the last
        endpoint tried outbound."""
        if self.inbound:
            return source
        return tried[-1].endpoint.id if tried else ""

    def finished_with(self, ex: Any, seconds: float, status: int, reason: str, grpc: int,
                      peer: str, trace: SpanContext | None) -> None:
        """``finished`` with the fields read by the caller (the exchange, whose reads of
        its own fields are typed); ``peer`` as ``peer`` makes it."""
        pair = self._request_labels.get((status, reason, peer, grpc))
        if pair is None:
            pair = self.label_pair(status, reason, peer, grpc)
        add(pair[0])
        observe_row(pair[1], self._duration.bounds, seconds)
        if trace is not None and trace.sampled and self.exporter is not None:
            self.record_span(ex, seconds)
        mode = self.log_mode
        if mode == "all" or (mode == "errors" and (reason or status >= 500 or grpc > 0)):
            self.log_access(ex, seconds)

    def label_pair(self, status: int, reason: str, peer: str,
                   grpc: int = -1) -> tuple[Any, Any]:
        """The request counter's cell and the duration histogram's row of a request
        answered ``status`` for ``reason`` ("" when the upstream answered), from
        ``peer``: the caller's service inbound, the answering endpoint outbound (see
        observe/request_labels.py). Kept until ``configure``, which comes before a
        series is removed (``ProxyMetrics.forget_endpoints``)."""
        if self.inbound:
            source, instance = source_label(peer, self._sources), self.instance
        else:
            source, instance = self.service, peer
        cache = self._request_labels
        if len(cache) >= MAX_LABEL_KEYS:
            cache.clear()
        pair = cache[(status, reason, peer, grpc)] = (
            self._requests.cell(request_labels(self.direction, source, self.destination,
                                               instance, status, reason, grpc)),
            self._duration.row(duration_labels(self.direction, source, self.destination)))
        return pair

    # -- tracing and access log -------------------------------------------------------

    def begin_trace(self, ex: Any) -> Any:
        """The request's trace context: the caller's continued, or a new trace."""
        traceparent = tracestate = None
        if ex.flags & HAS_TRACE:
            traceparent = header_value(ex.headers, TRACEPARENT)
            tracestate = header_value(ex.headers, TRACESTATE)
        return self.tracer.begin(traceparent, tracestate, time.time_ns())

    def record_span(self, ex: Any, seconds: float) -> None:
        self.exporter.offer(record(
            ex.trace, self.span_kind, ex.method.decode("latin-1"), request_path(ex.url),
            ex.status, ex.reason, self.destination,
            ex.tried[-1].endpoint.id if ex.tried else "", ex.down.source,
            int(seconds * 1e9)))

    def log_access(self, ex: Any, seconds: float) -> None:
        trace = ex.trace
        if trace is not None:
            trace_id, span_id = trace.trace_id.decode(), trace.span_id.decode()
        else:  # tracing off: the caller's trace, if it named one
            caller = parse_traceparent(header_value(ex.headers, TRACEPARENT)) \
                if ex.flags & HAS_TRACE else None
            trace_id, span_id = (caller.trace_id.decode() if caller else None), None
        inbound = self.direction == "inbound"
        access_log.info(access_line(
            time.time(), self.direction, ex.down.source if inbound else self.service,
            self.destination, ex.method.decode("latin-1"), request_path(ex.url), ex.status,
            ex.reason, ex.tried[-1].endpoint.id if ex.tried else None, len(ex.tried),
            seconds, trace_id, span_id, ex.grpc_status))

    def expire(self, now: float) -> None:
        """Time out every exchange whose overall or per-try deadline has passed, and
        (every HEAD_SWEEP_INTERVAL) every connection whose head is late or that sat idle
        between requests past its idle_timeout (both are its ``head_deadline``)."""
        self.now = now
        if self.sweeps_heads and now >= self.next_head_sweep:
            self.next_head_sweep = now + HEAD_SWEEP_INTERVAL
            for conn in [c for c in self.connections
                         if 0 < c.head_deadline <= now and not c.queue]:
                conn.head_timed_out()
        if self.timed:
            for ex in [ex for ex in self.timed if ex.deadline <= now]:
                ex.on_timeout()
            for ex in [ex for ex in self.timed if 0 < ex.try_deadline <= now]:
                ex.on_try_timeout()

    def drain(self) -> None:
        """Stop accepting; close idle connections; busy ones close after their response."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.drain()
