"""Raft consensus, written for meshlet.

``core`` is sans-IO, after etcd-io/raft: feed it ``tick()``, ``step(message)`` and
``propose(data)``; take a ``Ready`` with ``ready()``; persist its snapshot, hard state
and entries, then send its messages, then apply its committed entries; then call
``advance(ready)``. The core never touches a clock, socket, disk or global randomness.

``driver.RaftDriver`` does that for real, given a ``Storage`` and a ``Transport``
(the Protocols of ``interfaces``) and the state machine's ``apply``, ``restore`` and
``take_snapshot``. A server builds it with ``RaftDriver.on_disk``: ``storage`` (CRC
records in ``wal``, fsync) and ``transport`` (TCP); ``server/raft_node.py`` does. The
simulator (``tests/sim``) passes the twins of ``memory`` instead, with
``tick_interval=None``, and ticks, delivers and calls ``process()`` itself. Callers
must: ``await start()`` first, call everything from the one event loop, and
``await stop()`` at the end; ``propose`` (or ``submit``, its future) only on the
leader, treating ``Unavailable`` as an unknown outcome.
"""
