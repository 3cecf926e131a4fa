"""The agent: runs workloads with their sidecars, checks their health, keeps sidecar
configuration current from watches on the server, and reports to the catalog.

Pure decisions live in ``backoff``, ``health``, ``sidecar_config``, ``network_plan``
(a sandbox's link operations) and ``cluster_view`` (what the host knows of the
cluster's networking); ``workload``, ``containers``, ``sandboxes``, ``host_networks``,
``host_watches`` and ``agent`` are the drivers that own processes, sockets, links and
timers. ``agent.Agent`` composes them: workloads reach it only through
``workload_host.WorkloadHost``; the container runner and the mesh workloads' sandboxes
share one ``host_networks.HostNetworks``, and neither knows the other.
"""
