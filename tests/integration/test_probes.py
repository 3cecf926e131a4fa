"""Health probes against real listeners and real commands."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp

from meshlet.agent.probes import command_probe, http_probe, tcp_probe


async def test_tcp_probe_up_and_down() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ok, output = await tcp_probe("127.0.0.1", port, 1.0)
    assert ok and "ok" in output
    server.close()
    await server.wait_closed()
    ok, output = await tcp_probe("127.0.0.1", port, 1.0)
    assert not ok and "ConnectionRefusedError" in output


async def test_http_probe_status_codes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        await reader.readuntil(b"\r\n\r\n")
        status = b"200 OK" if b"/good" in line else b"500 Oops"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        assert (await http_probe(session, "127.0.0.1", port, "/good", 1.0))[0] is True
        ok, output = await http_probe(session, "127.0.0.1", port, "/bad", 1.0)
        assert not ok and output.endswith(": 500")
    server.close()


async def test_command_probe_exit_code_and_timeout() -> None:
    env = dict(os.environ)
    assert (await command_probe([sys.executable, "-c", "pass"], env, ".", 5.0))[0] is True
    ok, output = await command_probe([sys.executable, "-c", "print('sick'); exit(3)"], env,
                                     ".", 5.0)
    assert not ok and "exited 3: sick" in output
    ok, output = await command_probe([sys.executable, "-c", "import time; time.sleep(30)"],
                                     env, ".", 0.3)
    assert not ok and "timed out" in output
    ok, output = await command_probe(["/nonexistent/check"], env, ".", 1.0)
    assert not ok and "cannot run" in output
