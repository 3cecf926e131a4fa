"""The agent: runs workloads with their sidecars, checks their health, keeps sidecar
configuration current from watches on the server, and reports to the catalog.

Pure decisions live in ``backoff`` and ``health``; ``workload`` and ``agent`` are the
drivers that own processes, sockets and timers.
"""
