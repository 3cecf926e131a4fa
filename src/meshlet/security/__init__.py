"""Secrets and who may use what: the secret files a server keeps
(``secret_file.py``: the cluster's join token, later the management token)."""
