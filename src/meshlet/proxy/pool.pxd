# Types for the compiled build of pool.py (see meshlet/native.py); the .py stays the source.
# Every attribute the .py sets must be declared here.

cdef class ConnectionPool:
    cdef public dict idle
    cdef public object live, resting, pending
    cdef public bint closed
    cdef public long connections, active_requests, active_retries
    cdef public long max_connections, max_pending_requests, max_requests, max_retries

    cpdef bint admit_request(self)
    cpdef request_done(self)
    cpdef bint retry_room(self)
    cpdef retry_started(self)
    cpdef retry_done(self)
    cpdef tuple acquire(self, key, waiter, bint reuse=*)
    cpdef take_oldest_idle(self)
    cpdef cancel(self, waiter)
    cpdef tuple release(self, conn, double now)
    cpdef lost(self, conn, bint was_idle)
    cpdef freed(self)
