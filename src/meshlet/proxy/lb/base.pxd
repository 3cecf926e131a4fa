# Types for the compiled build of base.py (see meshlet/native.py); the .py stays the source.
# Every attribute the .py sets must be declared here, or the compiled build fails.

cdef class EndpointState:
    cdef public object endpoint, key
    cdef public long weight, outstanding
    cdef public double rtt, stamp

    cpdef start(self)
    cpdef finish(self, rtt, double now, double decay=*)
    cpdef double expected_rtt(self, double now, double decay=*)
