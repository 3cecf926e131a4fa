"""Container networking: IPAM, namespaces, bridges, and (later) overlay, DNS and CNI."""
