# Types for the compiled build of plain_head.py (see meshlet/native.py); the .py stays the source.
# The byte loops read the bytes through a pointer: C's speed, with the .py's meaning.
cimport cython

ctypedef const unsigned char* chars

cdef int NAME, TARGET, VALUE, LINE_OVERHEAD, CR, LF, SP, HT, COLON, COMMA, SLASH, ZERO, ONE
cdef int NINE
cdef int OTHER, NOT_PLAIN, CONNECTION, CONTENT_LENGTH, KEEP_ALIVE, MAX_LENGTH_DIGITS
cdef int HOST_FLAG, HOP_FLAG, ERROR_FLAG, TRACE_FLAG
cdef Py_ssize_t HEAD_LIMIT, HEADER_LIMIT, URL_LIMIT
cdef bytes CHAR_CLASSES

cdef tuple PLAIN_METHODS

@cython.locals(k=Py_ssize_t)
cdef bint starts(chars p, Py_ssize_t start, chars word)

@cython.locals(length=Py_ssize_t, method=bytes)
cdef bytes plain_method(chars p, Py_ssize_t n)

@cython.locals(k=Py_ssize_t)
cdef bint name_is(chars p, Py_ssize_t start, Py_ssize_t length, chars word)

cdef int name_kind(chars p, Py_ssize_t start, Py_ssize_t length)

@cython.locals(close=bint, keep=bint, i=Py_ssize_t, token=Py_ssize_t)
cdef int connection_options(chars p, Py_ssize_t start, Py_ssize_t end, bint http11)

@cython.locals(start=Py_ssize_t, classes=chars)
cdef Py_ssize_t field_name_end(chars p, Py_ssize_t i, Py_ssize_t n)

cdef Py_ssize_t field_value(chars p, Py_ssize_t colon, Py_ssize_t n)

@cython.locals(classes=chars)
cdef Py_ssize_t field_value_end(chars p, Py_ssize_t i, Py_ssize_t n)

@cython.locals(p=chars, classes=chars, n=Py_ssize_t, i=Py_ssize_t, start=Py_ssize_t,
               name_end=Py_ssize_t, value=Py_ssize_t, size=Py_ssize_t, count=Py_ssize_t,
               flags=int, kind=int, keep=int, http11=bint, keep_alive=bint,
               connection_seen=bint)
cpdef plain_request(bytes data)

@cython.locals(p=chars, classes=chars, n=Py_ssize_t, i=Py_ssize_t, start=Py_ssize_t,
               name_end=Py_ssize_t, value=Py_ssize_t, digits=Py_ssize_t, rest=Py_ssize_t,
               count=Py_ssize_t, status=int, length=Py_ssize_t, kind=int, keep=int,
               keep_alive=bint, connection_seen=bint)
cpdef int plain_response(bytes data)
