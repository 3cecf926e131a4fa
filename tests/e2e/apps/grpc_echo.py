"""A test gRPC app: `demo.Echo/Say` answers with its instance id and the request;
`demo.Echo/Fail` answers UNAVAILABLE from the instance named in the request."""

from __future__ import annotations

import os
from concurrent import futures

import grpc

INSTANCE = os.environ.get("MESHLET_INSTANCE", "echo")


def say(request: bytes, context: grpc.ServicerContext) -> bytes:
    return INSTANCE.encode() + b":" + request


def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request.decode() == INSTANCE:
        context.abort(grpc.StatusCode.UNAVAILABLE, f"{INSTANCE} is failing")
    return INSTANCE.encode()


handler = grpc.method_handlers_generic_handler("demo.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(say),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
server.start()
server.wait_for_termination()
