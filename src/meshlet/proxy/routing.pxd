# Types for the compiled build of routing.py (see meshlet/native.py); the .py stays the source.
# Every attribute the .py sets must be declared here.
cimport cython

cdef class RouteTable:
    cdef public list routes, _compiled

    cpdef choose(self, view, rng)
    cpdef choose_raw(self, bytes method, bytes target, rng)


ctypedef const unsigned char* chars

cdef int QUESTION, COLON, SLASH

@cython.locals(p=chars, n=Py_ssize_t, i=Py_ssize_t, query=Py_ssize_t, absolute=bint)
cpdef bytes raw_path(bytes target)
cpdef split(route, rng)
