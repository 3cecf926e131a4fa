# Types for the compiled build of peak_ewma.py (see meshlet/native.py); the .py stays the
# source. Every attribute the .py sets must be declared here.
from meshlet.proxy.lb.base cimport EndpointState


cdef class PeakEwma:
    cdef public double decay
    cdef public tuple _endpoints

    cpdef double cost(self, EndpointState e, double now)
