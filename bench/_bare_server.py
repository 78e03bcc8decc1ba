"""The baseline: a bare aiohttp endpoint that parses a JSON POST and answers 202, nothing else."""

import sys

import orjson
from aiohttp import web


async def events(request: web.Request) -> web.Response:
    body = await request.read()
    orjson.loads(body)
    return web.json_response({"ids": [request.headers.get("ce-id")]}, status=202)


app = web.Application()
app.router.add_post("/events", events)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
