# Types for the compiled build of cluster.py (see meshlet/native.py); the .py stays the source.
# Every attribute the .py sets must be declared here.
from meshlet.proxy.lb.base cimport EndpointState
from meshlet.proxy.pool cimport ConnectionPool
from meshlet.proxy.resilience.retry_budget cimport RetryBudget
from meshlet.proxy.routing cimport RouteTable


cdef class Target:
    cdef public object balancer, route, hash_key, key
    cdef public double timeout


cdef class Cluster:
    cdef public object name, clock, rng, zone, node, config, settings, outlier
    cdef public RetryBudget budget
    cdef public object partition, _default_target, _ctx
    cdef public RouteTable routes
    cdef public object connect_timeout, request_timeout
    cdef public dict states, balancers, members, raw_settings, _targets
    cdef public ConnectionPool pool, _h2_pool
    cdef public list available
    cdef public long retries
    cdef public bint needs_view, tracks_latency

    cpdef resolve(self, view, method=*, bytes target=*)
    cpdef pick(self, Target target, list exclude)
    cpdef bint untried(self, Target target, list tried)
    cpdef bint record_outcome(self, EndpointState state, bint failed)
    cpdef list pools(self)
    cpdef ConnectionPool h2_pool(self)
