# cython: boundscheck=False, wraparound=False
"""The compiled build of ``send_many.py`` (read that first): the same function, the
loop in C with the GIL released, so that other threads send at the same time."""

from libc.errno cimport EINTR, errno

COMPILED = True


cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void* data, size_t size, int flags)
    enum:
        MSG_DONTWAIT
        MSG_NOSIGNAL


def send_each(const int[::1] fds, const unsigned char[::1] data, long long[::1] sent,
              Py_ssize_t start, Py_ssize_t stop):
    cdef Py_ssize_t i, size = data.shape[0]
    cdef ssize_t written
    cdef const unsigned char* base
    if size == 0 or start >= stop:
        return
    if start < 0 or stop > fds.shape[0] or stop > sent.shape[0]:
        raise IndexError("send_each: range outside fds or sent")
    base = &data[0]
    with nogil:
        for i in range(start, stop):
            written = send(fds[i], base, size, MSG_DONTWAIT | MSG_NOSIGNAL)
            while written < 0 and errno == EINTR:
                written = send(fds[i], base, size, MSG_DONTWAIT | MSG_NOSIGNAL)
            sent[i] = written if written >= 0 else -errno
