"""Exports the sidecar's spans over OTLP/HTTP with the JSON encoding, in the background.

``SpanExporter.offer`` is all the request path does: it appends a finished span to a
bounded queue, or drops and counts it when the queue is full, so a collector that is
slow or down never holds a request up. A background task (``run``) sends the queue in
batches, every ``FLUSH_INTERVAL`` seconds or as soon as ``BATCH_SIZE`` spans wait, one
POST at a time to ``{endpoint}/v1/traces`` with a timeout; a batch that fails is
counted and dropped (no retries: the next batch is already waiting). The client is a
few lines of asyncio streams: a sidecar does not load aiohttp.

``otlp_body`` is the pure part: the ``ExportTraceServiceRequest`` JSON of a batch, as
the OTLP JSON mapping has it (ids in hex, times as strings of nanoseconds, enums as
integers, camelCase field names).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from meshlet.observe.exposition import Counter, Registry
from meshlet.observe.span import Span

log = logging.getLogger(__name__)
BATCH_SIZE = 512
MAX_QUEUE = 4096
FLUSH_INTERVAL = 1.0
EXPORT_TIMEOUT = 5.0  # one POST, connection included
SCOPE = {"name": "meshlet.proxy"}


def attribute(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def span_json(span: Span) -> dict[str, Any]:
    body: dict[str, Any] = {
        "traceId": span.trace_id, "spanId": span.span_id, "name": span.name,
        "kind": span.kind, "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": [attribute(k, v) for k, v in span.attributes],
        "status": {"code": span.status, **({"message": span.message} if span.message
                                           else {})}}
    if span.parent_id:
        body["parentSpanId"] = span.parent_id
    if span.trace_state:
        body["traceState"] = span.trace_state
    return body


def otlp_body(service: str, instance: str, spans: Sequence[Span]) -> bytes:
    """The JSON ``ExportTraceServiceRequest`` for ``spans`` of one sidecar."""
    resource = [attribute("service.name", service)]
    if instance:
        resource.append(attribute("service.instance.id", instance))
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": resource},
        "scopeSpans": [{"scope": SCOPE, "spans": [span_json(s) for s in spans]}]}]},
        separators=(",", ":")).encode()


class SpanCounters:
    """What happened to the spans, declared once per sidecar (exporters come and go as
    the tracing settings change)."""

    def __init__(self, registry: Registry) -> None:
        self.dropped = Counter("meshlet_proxy_spans_dropped",
                               "Spans dropped because the export queue was full.",
                               registry=registry)
        self.exported = Counter("meshlet_proxy_spans_exported",
                                "Spans the OTLP endpoint accepted.", registry=registry)
        self.failed = Counter("meshlet_proxy_spans_failed",
                              "Spans in batches the OTLP endpoint refused or did not "
                              "answer in time.", registry=registry)


class SpanExporter:
    """The queue and the task that empties it."""

    def __init__(self, endpoint: str, service: str, instance: str, counters: SpanCounters,
                 max_queue: int = MAX_QUEUE, batch_size: int = BATCH_SIZE,
                 interval: float = FLUSH_INTERVAL, timeout: float = EXPORT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.service = service
        self.instance = instance
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval = interval
        self.timeout = timeout
        self.queue: deque[Span] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.dropped = counters.dropped
        self.exported = counters.exported
        self.failed = counters.failed

    def __repr__(self) -> str:
        return f"<SpanExporter {self.endpoint} queued={len(self.queue)}>"

    def offer(self, span: Span) -> None:
        """Queue ``span``, or drop and count it when the queue is full."""
        queue = self.queue
        if len(queue) >= self.max_queue:
            self.dropped.inc()
            return
        queue.append(span)
        if len(queue) == self.batch_size:
            self.wake.set()

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self, flush: bool = True) -> None:
        """Stop the task; with ``flush``, try one batch of what is queued (within the
        timeout); what is left is counted as failed."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if flush and self.queue:
            await self.export_batch()
        self.failed.inc(len(self.queue))
        self.queue.clear()

    async def run(self) -> None:
        while True:
            if len(self.queue) < self.batch_size:
                try:
                    await asyncio.wait_for(self.wake.wait(), self.interval)
                except TimeoutError:
                    pass
            self.wake.clear()
            while self.queue:
                await self.export_batch()
                if len(self.queue) < self.batch_size:
                    break

    async def export_batch(self) -> None:
        batch = [self.queue.popleft() for _ in range(min(self.batch_size, len(self.queue)))]
        if not batch:
            return
        body = otlp_body(self.service, self.instance, batch)
        try:
            status = await asyncio.wait_for(post(self.endpoint + "/v1/traces", body),
                                            self.timeout)
        except (TimeoutError, OSError, ValueError, ssl.SSLError) as exc:
            log.debug("span export to %s failed: %r", self.endpoint, exc)
            status = 0
        if 200 <= status < 300:
            self.exported.inc(len(batch))
        else:
            self.failed.inc(len(batch))


async def post(url: str, body: bytes) -> int:
    """POST ``body`` as JSON to ``url`` (http or https); the response's status."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    context = ssl.create_default_context() if https else None
    reader, writer = await asyncio.open_connection(host, port, ssl=context,
                                                   server_hostname=host if https else None)
    try:
        target = parts.path or "/"
        authority = parts.netloc.rpartition("@")[2]
        writer.write(b"POST %b HTTP/1.1\r\nhost: %b\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (
                         target.encode(), authority.encode(), len(body), body))
        await writer.drain()
        line = await reader.readline()
        fields = line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            raise ValueError(f"not an HTTP response: {line[:80]!r}")
        return int(fields[1])
    finally:
        writer.close()
