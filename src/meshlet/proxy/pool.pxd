# Types for the compiled build of pool.py (see native.py); the .py stays the source.
# Every attribute the .py sets must be declared here.

cdef class EndpointPool:
    cdef public object endpoint
    cdef public list idle
    cdef public bint closed

    cpdef take(self)
    cpdef bint give(self, conn, double now)
