# Types for the compiled build of hot_metrics.py (see proxy/native.py); the .py stays the
# source. Every attribute the .py sets must be declared here.

cdef class HotCounter:
    cdef public str name, documentation
    cdef public list labelnames
    cdef public dict values

    cpdef inc(self, tuple labels, double amount=*)


cdef class HotHistogram:
    cdef public str name, documentation
    cdef public list labelnames, bounds
    cdef public dict counts, sums

    cpdef observe(self, tuple labels, double value)


cdef class HotEndpointStats:
    cdef public str counter_name, summary_name, documentation
    cdef public list labelnames
    cdef public dict values

    cpdef observe(self, tuple labels, long code, double seconds)
