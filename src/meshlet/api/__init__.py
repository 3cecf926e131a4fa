"""The HTTP JSON API (``/v1/...``): server routes, request schemas and the client."""
