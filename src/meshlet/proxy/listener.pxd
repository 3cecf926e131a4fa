# Types for the compiled build of listener.py (see meshlet/native.py); the .py stays the
# source. Every attribute the .py sets must be declared here.
from meshlet.observe.hot_metrics cimport HotCounter, HotEndpointStats, HotHistogram, add, \
    observe_attempt, observe_row
from meshlet.proxy.connector cimport Connector
from meshlet.proxy.lb.base cimport EndpointState


cdef class ListenerState:
    cdef public object config, cluster, metrics, loop, server, port, active_gauge
    cdef public object rate_limiter, intentions, tls, tracer, exporter
    cdef public dict decisions
    cdef public Connector connector, _h2_connector
    cdef public str direction, destination, log_mode, service, instance
    cdef public int span_kind
    cdef public set connections, timed
    cdef public long active_requests, max_connections
    cdef public bint draining, sweeps_heads, inbound
    cdef public double head_timeout, idle_timeout, detect_timeout, now, next_head_sweep
    cdef public dict _request_labels, _endpoint_rows
    cdef public set _sources
    cdef public HotCounter _requests
    cdef public HotHistogram _duration
    cdef public HotEndpointStats _endpoint_stats

    cpdef observe_endpoint(self, EndpointState state, long status, double seconds)
    cpdef finished(self, ex, double seconds)
    cpdef str peer(self, str source, list tried)
    cpdef finished_with(self, ex, double seconds, int status, str reason, int grpc, str peer,
                        trace)
    cpdef tuple label_pair(self, int status, str reason, str peer, int grpc=*)
    cpdef str denied(self, str source, ex=*)
