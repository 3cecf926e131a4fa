"""What a CLI command loads and how its requests behave: each on a connection of its
own through http.client (``api/one_shot.py``), with no aiohttp and no module of a
command it does not run, against a real server and raw sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import click
import pytest

from meshlet.api import one_shot
from meshlet.api.client import Client
from meshlet.cli.main import LAZY_COMMANDS, cli
from meshlet.errors import ConfigError, MeshletError, NotFound, Unavailable
from meshlet.server.main import Server
from tests.conftest import async_management_token


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    started = await Server.start(tmp_path, "127.0.0.1", 0)
    try:
        yield started, await async_management_token(tmp_path)
    finally:
        await started.stop()


def run_command(*args: str) -> tuple[str, set[str]]:
    """``meshlet ARGS`` in a fresh interpreter: its output and the modules it loaded."""
    script = textwrap.dedent("""
        import atexit, json, sys
        atexit.register(lambda: sys.stderr.write(json.dumps(sorted(sys.modules))))
        sys.argv = ["meshlet", *sys.argv[1:]]
        from meshlet.cli.main import main
        main()
    """)
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout, set(json.loads(done.stderr))


async def test_a_command_loads_no_aiohttp_and_no_other_commands_modules(
        server: tuple[Server, str]) -> None:
    started, token = server
    base = ["--addr", started.url, "--token", token]
    await asyncio.to_thread(run_command, *base, "kv", "put", "colour", "blue")
    out, modules = await asyncio.to_thread(run_command, *base, "kv", "get", "colour")
    assert out == "blue\n"
    assert "aiohttp" not in modules
    for where in LAZY_COMMANDS.values():
        assert where.split(":")[0] not in modules, where


def test_every_lazy_command_is_the_command_of_its_name() -> None:
    ctx = click.Context(cli)
    for name, where in LAZY_COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name, where
    assert set(LAZY_COMMANDS) <= set(cli.list_commands(ctx))


async def test_answers_and_errors_match_the_pooled_clients(
        server: tuple[Server, str]) -> None:
    started, token = server
    for pooled in (True, False):
        async with Client(started.url, token=token, pooled=pooled) as client:
            await client.kv_put(f"k/{pooled}", b"\x00\xffbytes")
            assert await client.kv_get_raw(f"k/{pooled}") == b"\x00\xffbytes"
            listed = await client.kv_list("k/")
            assert f"k/{pooled}" in json.dumps(listed)
            with pytest.raises(NotFound):
                await client.kv_get_raw("k/none")


@pytest.fixture
def silent_port() -> Iterator[tuple[int, socket.socket]]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1], listener


@contextlib.asynccontextmanager
async def answering(answer: bytes) -> AsyncIterator[int]:
    """A server on loopback that gives every request ``answer``, as is: its port."""
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_server_that_closes_without_answering_is_named(
        silent_port: tuple[int, socket.socket]) -> None:
    port, listener = silent_port

    def close_first() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()
    closer = asyncio.get_running_loop().run_in_executor(None, close_first)
    async with Client(f"http://127.0.0.1:{port}", pooled=False) as client:
        with pytest.raises(Unavailable, match="closed the connection without an HTTP answer"):
            await client.status()
    await closer


def test_an_abandoned_request_does_not_hold_the_process(
        silent_port: tuple[int, socket.socket]) -> None:
    """A command interrupted mid-request (Ctrl-C cancels its task) exits then, not
    when the request's own timeout (here 600 s) would have ended it."""
    port, _ = silent_port
    script = textwrap.dedent(f"""
        import asyncio
        from meshlet.api import one_shot
        async def main():
            try:
                await asyncio.wait_for(one_shot.request(
                    "GET", "http://127.0.0.1:{port}/v1/status", headers={{}},
                    timeout=600, tls=None), 0.1)
            except TimeoutError:
                print("abandoned")
        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout == "abandoned\n" and done.stderr == ""


@pytest.mark.parametrize("answer", [
    pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", id="101-headers"),
])
async def test_an_answer_that_is_not_a_servers_is_unavailable_in_one_line(
        silent_port: tuple[int, socket.socket], answer: bytes) -> None:
    port, listener = silent_port

    def answer_once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(answer)
    answering = asyncio.get_running_loop().run_in_executor(None, answer_once)
    async with Client(f"http://127.0.0.1:{port}", pooled=False) as client:
        with pytest.raises(Unavailable) as refused:
            await client.status()
    await answering
    assert "\n" not in str(refused.value) and "timed out" not in str(refused.value)


async def test_an_answer_dripped_slowly_ends_at_the_requests_deadline(
        silent_port: tuple[int, socket.socket]) -> None:
    """A socket timeout bounds each read alone: a server that sends a byte a second
    would hold a command for ever without the exchange's own deadline."""
    port, listener = silent_port
    stop = asyncio.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not stop.is_set():
                try:
                    connection.sendall(b"1\r\nx\r\n")
                except OSError:
                    return
                connection.settimeout(0.1)
                try:
                    connection.recv(1)  # waits 0.1 s, or sees the client go
                except TimeoutError:
                    continue
                return
    dripping = asyncio.get_running_loop().run_in_executor(None, drip)
    try:
        async with Client(f"http://127.0.0.1:{port}", timeout=0.5, pooled=False) as client:
            with pytest.raises(Unavailable, match=r"no whole answer within 0\.5s"):
                await client.status()
    finally:
        stop.set()
        await dripping


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "one-shot"])
async def test_a_redirect_is_not_followed_and_takes_no_token_away(
        pooled: bool, silent_port: tuple[int, socket.socket]) -> None:
    elsewhere, other = silent_port
    other.settimeout(0.5)
    redirect = (b"HTTP/1.1 307 Temporary Redirect\r\nContent-Length: 0\r\nLocation: "
                b"http://127.0.0.1:%d/v1/status\r\n\r\n" % elsewhere)
    async with answering(redirect) as port:
        async with Client(f"http://127.0.0.1:{port}", token="t" * 43,
                          pooled=pooled) as client:
            with pytest.raises(MeshletError, match="HTTP 307"):
                await client.status()
        with pytest.raises(TimeoutError):
            other.accept()  # nobody came


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "one-shot"])
async def test_dot_segments_in_a_key_stay_in_the_key(server: tuple[Server, str],
                                                    pooled: bool) -> None:
    """``..`` in a name is part of it: resolved by the client, ``x/../../status``
    would read another route."""
    started, token = server
    async with Client(started.url, token=token, pooled=pooled) as client:
        with pytest.raises(NotFound):
            await client.kv_get_raw("x/../../status")
        await client.kv_put("p/x/../y", b"dotted")
        assert await client.kv_get_raw("p/x/../y") == b"dotted"
        with pytest.raises(NotFound):
            await client.kv_get_raw("p/y")


def test_a_token_with_a_line_break_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        Client("http://127.0.0.1:1", token="secret-part\r\nX-Injected: 1")
    assert "secret" not in str(refused.value) and "line break" in str(refused.value)


@pytest.mark.parametrize("addr", ["http://127.0.0.1:99999", "http://127.0.0.1:abc",
                                  "http://[::1", "ftp://127.0.0.1:1"])
async def test_an_address_that_is_not_one_is_unavailable_not_a_crash(addr: str) -> None:
    async with Client(addr, pooled=False) as client:
        with pytest.raises(Unavailable, match="cannot reach meshlet"):
            await client.status()


async def test_a_server_on_ipv6_loopback_gives_a_url_its_clients_can_use(
        tmp_path: Path) -> None:
    started = await Server.start(tmp_path, "::1", 0)
    try:
        assert started.url.startswith("http://[::1]:"), started.url
        token = await async_management_token(tmp_path)
        async with Client(started.url, token=token, pooled=False) as client:
            assert "leader" in json.dumps(await client.status())
    finally:
        await started.stop()


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "one-shot"])
async def test_an_answer_longer_than_any_servers_is_refused(
        pooled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound is 256 MiB; lowered here so that the test sends 100 kB, not 256 MiB."""
    monkeypatch.setattr(one_shot, "MAX_ANSWER_BYTES", 64 * 1024)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"[" * 100000
    async with answering(big) as port, Client(f"http://127.0.0.1:{port}",
                                              pooled=pooled) as client:
        with pytest.raises(MeshletError, match="an answer over 65536 bytes"):
            await client.status()


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "one-shot"])
async def test_an_empty_answer_is_not_meshlets(pooled: bool) -> None:
    """Every JSON route of a server answers a value; an empty 200 is another server's."""
    empty = b"HTTP/1.1 200 OK\r\nX-Meshlet-Index: 1\r\nContent-Length: 0\r\n\r\n"
    async with answering(empty) as port, Client(f"http://127.0.0.1:{port}",
                                                pooled=pooled) as client:
        with pytest.raises(MeshletError, match="not meshlet's: the answer is empty"):
            await client.status()


@pytest.mark.parametrize("body", [b"null", b"{}", b"[]", b'"x"'])
async def test_json_from_another_server_is_named_not_read_as_meshlets(body: bytes) -> None:
    """Something else on the address (a web server, a sidecar's port) may answer JSON:
    without the index header every success of meshlet's carries, the command says so
    in one line instead of failing inside, on a shape it did not expect."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d" \
        b"\r\n\r\n%b" % (len(body), body)
    async with answering(answer) as port:
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshlet", "--addr", f"127.0.0.1:{port}", "services",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 1 and out == b""
    assert err.decode() == (
        f"meshlet: error: GET http://127.0.0.1:{port}/v1/services: HTTP 200 without "
        "X-Meshlet-Index: not a meshlet server's answer: is it a server's API "
        "address (--http)?\n")
