"""The server process: durable command log + state machine + HTTP API."""
