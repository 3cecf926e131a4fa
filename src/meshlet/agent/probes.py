"""Health probes against a workload's app: HTTP GET, TCP connect, or a command.

Each returns (ok, output) and never raises: a probe failure is data, not an error.
"""

from __future__ import annotations

import asyncio

import aiohttp


async def http_probe(session: aiohttp.ClientSession, host: str, port: int, path: str,
                     timeout: float) -> tuple[bool, str]:
    url = f"http://{host}:{port}{path}"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            await resp.read()
            return 200 <= resp.status < 400, f"HTTP GET {url}: {resp.status}"
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return False, f"HTTP GET {url}: {type(exc).__name__} {exc}".strip()


async def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as exc:
        return False, f"TCP connect {host}:{port}: {type(exc).__name__} {exc}".strip()
    writer.close()
    return True, f"TCP connect {host}:{port}: ok"


async def command_probe(argv: list[str], env: dict[str, str], cwd: str,
                        timeout: float) -> tuple[bool, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as exc:
        return False, f"cannot run {argv[0]}: {exc.strerror}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"{argv[0]}: timed out after {timeout}s"
    text = out.decode(errors="replace").strip()[-200:]
    return proc.returncode == 0, f"{argv[0]} exited {proc.returncode}: {text}"
