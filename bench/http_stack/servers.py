"""One V2-infer-shaped endpoint served by each HTTP stack that bench/http_stack.py measures.

    python bench/http_stack/servers.py STACK PORT

Every stack serves `POST /v2/models/m/infer` with the same handler (`infer`: stdlib json and
numpy, so that only the stack differs) and `GET /v2/health/ready`, on 127.0.0.1, in this one
process on one asyncio event loop (the standard one, as Flywheel's services run), embedded the
way the gateway would embed it beside grpc.aio: started inside a running loop, stopped by the
process's own SIGTERM handler. aiohttp runs in Flywheel's environment; the others in the
virtualenv built from bench/http_stack/requirements.txt, so each imports its stack lazily.
"""

# Each environment lacks the other's stacks (so uvicorn.Server is Any in Flywheel's); mypy
# checks this file in both.
# mypy: disable-error-code="import-not-found"
# mypy: allow-subclassing-any
# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time.

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, MutableMapping
from typing import Any, cast

import numpy as np

HOST = "127.0.0.1"
INFER = "/v2/models/m/infer"
READY = "/v2/health/ready"
JSON = "application/json"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def infer(body: bytes) -> bytes:
    """The model: the argmax of each row of the one FP32 input, as V2 JSON."""
    tensor = json.loads(body)["inputs"][0]
    features = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    labels = features.argmax(axis=1)
    response = {
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {"name": "label", "shape": [len(labels)], "datatype": "INT64", "data": labels.tolist()}
        ],
    }
    return json.dumps(response).encode()


async def until_sigterm() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


async def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def infer_handler(request: web.Request) -> web.Response:
        return web.Response(body=infer(await request.read()), content_type=JSON)

    async def ready_handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_post(INFER, infer_handler)
    app.router.add_get(READY, ready_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    await until_sigterm()
    await runner.cleanup()


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def infer_handler(request: Request) -> Response:
        return Response(infer(await request.body()), media_type=JSON)

    async def ready_handler(request: Request) -> Response:
        return Response()

    return Starlette(
        routes=[
            Route(INFER, infer_handler, methods=["POST"]),
            Route(READY, ready_handler, methods=["GET"]),
        ]
    )


def fastapi_app() -> Any:
    from fastapi import FastAPI, Request, Response

    async def infer_handler(request: Request) -> Response:
        return Response(infer(await request.body()), media_type=JSON)

    async def ready_handler() -> Response:
        return Response()

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route(INFER, infer_handler, methods=["POST"])
    app.add_api_route(READY, ready_handler, methods=["GET"])
    return app


async def bare_asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """uvicorn's floor: routing by hand, no framework."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST" and scope["path"] == INFER:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        status, body, headers = 200, infer(b"".join(chunks)), [(b"content-type", JSON.encode())]
    elif scope["method"] == "GET" and scope["path"] == READY:
        status, body, headers = 200, b"", []
    else:
        status, body, headers = 404, b"", []
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_uvicorn(app: Any, port: int) -> None:
    import uvicorn

    class EmbeddedServer(uvicorn.Server):
        # serve() would take SIGINT and SIGTERM from the service for the time it runs.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    server = EmbeddedServer(config)
    serving = asyncio.create_task(server.serve())
    await until_sigterm()
    server.should_exit = True
    await serving


async def serve_granian(app: Any, port: int) -> None:
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        app, address=HOST, port=port, interface=Interfaces.ASGINL, log_level=LogLevels.error
    )
    serving = asyncio.create_task(server.serve())
    await until_sigterm()
    cast(Any, server).stop()  # untyped
    await serving


STACKS: dict[str, Callable[[int], Coroutine[Any, Any, None]]] = {
    "aiohttp": serve_aiohttp,
    "uvicorn-starlette": lambda port: serve_uvicorn(starlette_app(), port),
    "uvicorn-fastapi": lambda port: serve_uvicorn(fastapi_app(), port),
    "uvicorn-bare-asgi": lambda port: serve_uvicorn(bare_asgi_app, port),
    "granian-starlette": lambda port: serve_granian(starlette_app(), port),
}


def main() -> None:
    stack, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(STACKS[stack](port))


if __name__ == "__main__":
    main()
