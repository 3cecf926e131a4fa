"""The replicated state machine: catalog, health, KV, config, networks, containers,
Kubernetes objects and their pods.

Drive it by calling ``StateMachine.apply(index, command)`` with commands from
``meshlet.state.commands`` in log order. ``apply`` is pure and deterministic: it reads
no clock, does no I/O and uses no randomness, so every replica that applies the same
log reaches the same state. ``check(command)`` says, without changing anything, whether
``apply`` would fail; the write path uses it to refuse bad writes before logging them.
``COMMANDS`` is the one registry of command types: a log entry's bytes come from
``COMMANDS.encode(command)`` and go back with ``COMMANDS.decode(data)``.
"""

from meshlet.state.commands import Command
from meshlet.state.machine import COMMANDS, Result, StateMachine

__all__ = ["COMMANDS", "Command", "Result", "StateMachine"]
