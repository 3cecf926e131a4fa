# Types for the compiled build of exchange.py (see meshlet/native.py); the .py stays the source.
# Every attribute the .py sets must be declared here, or the compiled build fails.
cimport cython

from meshlet.proxy.cluster cimport Cluster, Target
from meshlet.proxy.connector cimport Connector
from meshlet.proxy.http cimport DownstreamHttp
from meshlet.proxy.lb.base cimport EndpointState
from meshlet.proxy.listener cimport ListenerState
from meshlet.proxy.pool cimport ConnectionPool
from meshlet.proxy.upstream cimport UpstreamHttp


cpdef bint removes_any(route, list headers)


cdef class Exchange:
    cdef public double attempt_time, deadline, try_deadline, start_time
    cdef public bint body_done, chunked, discarding, finished, got_response_bytes, interim
    cdef public bint is_head, keep_alive, relay, response_started, retrying, waiting, until_close
    cdef public int flags, framing, grpc_status, status
    cdef public Py_ssize_t pending_size, sent_size
    cdef public object connect_task, loop, relay_head, trace
    cdef public Target target
    cdef public Cluster cluster
    cdef public Connector connector
    cdef public ConnectionPool conns
    cdef public ListenerState listener
    cdef public EndpointState state
    cdef public DownstreamHttp down
    cdef public UpstreamHttp upstream
    cdef public list headers, pending, sent, tried
    cdef public bytes method, url, relay_first, raw_head
    cdef public str last_error, reason, version

    @cython.locals(target=Target, cluster=Cluster)
    cpdef start(self)
    cpdef build_head(self, Target target)
    cpdef queue_head(self, bytes head)
    @cython.locals(cluster=Cluster, state=EndpointState)
    cpdef attempt(self)
    cpdef acquire(self, EndpointState state, bint reuse)
    cpdef start_connect(self)
    cpdef connect_failed(self, state, str reason)
    @cython.locals(state=EndpointState)
    cpdef attach(self, UpstreamHttp conn)
    cpdef emit(self, bytes data)
    cpdef request_body(self, bytes body)
    cpdef request_done(self)
    cpdef int retry_verdict(self, bint not_processed, bint opted_in=*)
    cpdef retry_or_fail(self, str reason, int status, bint not_processed)
    cpdef schedule_retry(self, str reason)
    cpdef attempt_if_live(self)
    cpdef response_head(self, int status, bytes reason, list headers, int flags)
    cpdef relayed_head(self, int status, bytes data)
    cpdef bint should_retry_response(self, int status, list headers, int flags)
    cpdef response_body(self, bytes body)
    cpdef response_done(self, bint upstream_keep_alive)
    cpdef upstream_lost(self, UpstreamHttp conn)
    cpdef on_try_timeout(self)
    cpdef on_timeout(self)
    cpdef end_attempt(self, status, bint reusable)
    cpdef local_reply(self, int status, str reason, str detail=*)
    @cython.locals(listener=ListenerState)
    cpdef finish(self)
    cpdef release_claims(self)
    cpdef abort(self)
