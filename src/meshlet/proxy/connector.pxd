# Types for the compiled build of connector.py (see native.py); the .py stays the source.
# Every attribute the .py sets must be declared here.
from meshlet.proxy.pool cimport ConnectionPool
from meshlet.proxy.upstream cimport UpstreamHttp


cdef class Connector:
    cdef public object loop

    cpdef UpstreamHttp upstream(self, ConnectionPool pool, key)
    cpdef freed(self, ConnectionPool pool)
    cpdef lost(self, UpstreamHttp conn, bint was_idle)
    cpdef release(self, UpstreamHttp conn, double now)
