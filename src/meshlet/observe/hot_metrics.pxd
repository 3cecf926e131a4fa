# Types for the compiled build of hot_metrics.py (see meshlet/native.py); the .py stays the
# source. Every attribute the .py sets must be declared here.

cimport cython


cdef class HotCounter:
    cdef public str name, documentation
    cdef public list labelnames
    cdef public dict values

    cpdef list cell(self, tuple labels)
    cpdef inc(self, tuple labels, double amount=*)


cpdef add(list cell)


cdef class HotHistogram:
    cdef public str name, documentation
    cdef public list labelnames, bounds
    cdef public dict rows

    cpdef list row(self, tuple labels)
    cpdef observe(self, tuple labels, double value)


@cython.locals(low=Py_ssize_t, high=Py_ssize_t, middle=Py_ssize_t, bound=double)
cpdef observe_row(list row, list bounds, double value)


cdef class HotEndpointStats:
    cdef public str counter_name, summary_name, documentation
    cdef public list labelnames
    cdef public dict values

    cpdef list row(self, tuple labels)
    cpdef observe(self, tuple labels, long code, double seconds)


cpdef observe_attempt(list row, long code, double seconds)
