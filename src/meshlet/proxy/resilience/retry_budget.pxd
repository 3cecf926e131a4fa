# Types for the compiled build of retry_budget.py (see meshlet/native.py); the .py stays
# the source. Every attribute the .py sets must be declared here.

cdef class RetryBudget:
    cdef public double ratio, min_per_second, window, width
    cdef public list _requests, _retries, _epochs
    cdef public tuple _current

    cpdef record_request(self, double now)
    cpdef bint try_retry(self, double now)
