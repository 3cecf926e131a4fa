# Types for the compiled build of headers.py (see meshlet/native.py); the .py stays the source.
cpdef int header_flags(bytes name, bytes value)
cpdef bytes chunk(bytes data)
cpdef frozenset connection_listed(list headers)
cpdef forward_headers(list parts, list headers, frozenset drop=*, int flags=*)
