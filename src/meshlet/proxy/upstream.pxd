# Types for the compiled build of upstream.py (see meshlet/native.py); the .py stays the source.
# Every attribute the .py sets must be declared here, or the compiled build fails.
from meshlet.proxy.connector cimport Connector
from meshlet.proxy.exchange cimport Exchange
from meshlet.proxy.pool cimport ConnectionPool


cdef class _RelayedResponse:
    cdef UpstreamHttp conn


cdef class UpstreamHttp:
    cdef public ConnectionPool pool
    cdef public Connector connector
    cdef public object key, parser, relay_parser, transport, send
    cdef public bytes reason
    cdef public bint relay_done, relay_fresh, relay_keep_alive, closed, counted, reused, reset_parser, in_body, body_seen, done_pending, done_keep_alive
    cdef public Exchange exchange
    cdef public list headers
    cdef public double idle_since
    cdef public int flags, relay_status
    cdef public Py_ssize_t framing_raw, trailer_size, head_size

    cpdef relay(self, Exchange ex, bytes data)
    cpdef pass_on(self, Exchange ex, bytes data)
    cpdef parse(self, Exchange ex, bytes data)
    cpdef parse_instead(self, Exchange ex, bytes data)
    cpdef restart_relay(self)
    cpdef no_body_follows(self)
    cpdef set_reading(self, bint on)
    cpdef close(self)
