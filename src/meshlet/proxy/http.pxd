# Types for the compiled build of http.py (see meshlet/native.py); the .py stays the source.
# Every attribute the .py sets must be declared here, or the compiled build fails.
from meshlet.proxy.exchange cimport Exchange
from meshlet.proxy.listener cimport ListenerState


cdef class DownstreamHttp:
    cdef public ListenerState listener
    cdef public object loop, transport, send, parser, queue, switched
    cdef public set read_pauses
    cdef public Exchange parsing
    cdef public bytes url
    cdef public list headers, corked
    cdef public bint closed, half_closed, write_paused, in_head, no_end_yet, body_seen
    cdef public bint detecting
    cdef public str peer_ip, refusal, refusal_detail, source
    cdef public int flags, refused
    cdef public Py_ssize_t head_size, head_raw, framing_raw
    cdef public double head_deadline, opened_at

    cpdef begin(self, Exchange ex)
    cpdef plain_request(self, tuple plain, bytes data)
    cpdef pause_reading(self, str reason)
    cpdef resume_reading(self, str reason)
    cpdef write(self, bytes data)
    cpdef cork(self)
    cpdef uncork(self)
    cpdef refuse(self, int status, str reason, str detail)
    cpdef head_timed_out(self)
    cpdef exchange_finished(self, Exchange ex)
    cpdef fail_parse(self, int status, str reason, str detail=*)
    cpdef drain(self)
    cpdef close(self)
