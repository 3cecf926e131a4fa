"""Who may do what: API tokens and policies (``acl.py``, pure); the secret files a
server keeps (the management token, the join token) are written and read by
``meshlet.private_files``.

``acl.Authorizer`` answers (token, kind, name, access) from policies alone; the API
resolves a request's secret to a token through the replicated state and asks it.
"""
