# Types for the compiled build of http.py (see native.py); the .py stays the source.
# Every attribute the .py sets must be declared here, or the compiled build fails.
from meshlet.proxy.exchange cimport Exchange
from meshlet.proxy.listener cimport ListenerState


cdef class DownstreamHttp:
    cdef public ListenerState listener
    cdef public object loop, transport, send, parser, queue
    cdef public set read_pauses
    cdef public Exchange parsing
    cdef public bytes url
    cdef public list headers, corked
    cdef public bint closed, half_closed, write_paused
    cdef public str peer_ip
    cdef public int flags

    cpdef pause_reading(self, str reason)
    cpdef resume_reading(self, str reason)
    cpdef write(self, bytes data)
    cpdef cork(self)
    cpdef uncork(self)
    cpdef exchange_finished(self, Exchange ex)
    cpdef fail_parse(self, int status, str reason)
    cpdef drain(self)
    cpdef close(self)
