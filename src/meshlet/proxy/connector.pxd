# Types for the compiled build of connector.py (see meshlet/native.py); the .py stays the source.
# Every attribute the .py sets must be declared here.
from meshlet.proxy.pool cimport ConnectionPool
from meshlet.proxy.upstream cimport UpstreamHttp


cdef class Connector:
    cdef public object loop, tls
    cdef public str identity

    cpdef UpstreamHttp upstream(self, ConnectionPool pool, key)
    cpdef failed(self, UpstreamHttp conn)
    cpdef lost(self, UpstreamHttp conn)
    cpdef release(self, UpstreamHttp conn, double now)
