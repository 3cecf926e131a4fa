# Types for the compiled build of routing.py (see native.py); the .py stays the source.
# Every attribute the .py sets must be declared here.

cdef class RouteTable:
    cdef public list routes, _compiled

    cpdef choose(self, view, rng)
    cpdef choose_raw(self, bytes method, bytes target, rng)


cpdef bytes raw_path(bytes target)
cpdef split(route, rng)
