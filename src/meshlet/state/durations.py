"""Human durations: kept here for the control plane's imports; the parser is
``meshlet.durations``, a leaf the sidecar can load without the state machine."""

from meshlet.durations import parse_duration

__all__ = ["parse_duration"]
