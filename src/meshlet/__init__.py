"""meshlet: a light service mesh and container-networking platform for Linux."""

__version__ = "0.1.0"
