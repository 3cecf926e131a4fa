# Types for the compiled build of request_view.py (see meshlet/native.py); the .py stays the
# source. Every attribute the .py sets must be declared here.

cdef class RequestView:
    cdef public object _headers, _query
    cdef public list _raw_headers
    cdef public str method, source_ip, target
