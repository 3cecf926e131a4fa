"""The replicated state machine: catalog, health, KV and per-service config.

Drive it by calling ``StateMachine.apply(index, command)`` with commands from
``meshlet.state.commands`` in log order. ``apply`` is pure and deterministic: it reads
no clock, does no I/O and uses no randomness, so every replica that applies the same
log reaches the same state. ``check(command)`` says, without changing anything, whether
``apply`` would fail; the write path uses it to refuse bad writes before logging them.
"""

from meshlet.state.commands import Command, decode_command, encode_command
from meshlet.state.machine import Result, StateMachine

__all__ = ["Command", "Result", "StateMachine", "decode_command", "encode_command"]
