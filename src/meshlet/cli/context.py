"""What every command gets: the API address, the ACL token and the output format."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from meshlet.api.client import Client

T = TypeVar("T")


class Context:
    def __init__(self, addr: str, output: str, token: str | None = None) -> None:
        self.addr = addr
        self.output = output
        self.token = token

    def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        async def run() -> T:
            async with Client(self.addr, token=self.token, pooled=False) as client:
                return await fn(client)
        return asyncio.run(run())

    @property
    def json(self) -> bool:
        return self.output == "json"


pass_ctx = click.make_pass_decorator(Context)
