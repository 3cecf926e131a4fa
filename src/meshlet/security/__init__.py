"""Who may do what: API tokens and policies (``acl.py``, pure), and the secret files a
server keeps (``secret_file.py``: the management token, the join token).

``acl.Authorizer`` answers (token, kind, name, access) from policies alone; the API
resolves a request's secret to a token through the replicated state and asks it.
"""
