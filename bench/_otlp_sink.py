"""An OTLP/HTTP trace receiver that takes every export and keeps nothing: where bench/instructions.py's
``traced`` server sends its spans, so the exporter's whole path (batch, protobuf, HTTP) is counted.

    python bench/_otlp_sink.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web

__all__ = ["main"]


async def _traces(request: web.Request) -> web.Response:
    await request.read()
    # An empty ExportTraceServiceResponse: a message whose fields are all unset encodes to no bytes.
    return web.Response(body=b"", content_type="application/x-protobuf")


async def _ready(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main(port: int) -> None:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/traces", _traces)
    app.router.add_get("/", _ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
