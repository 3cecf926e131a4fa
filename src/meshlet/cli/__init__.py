"""The ``meshlet`` command: argument parsing and output only."""
