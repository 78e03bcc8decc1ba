"""The baseline: a bare aiohttp endpoint that parses a JSON POST and answers 202, nothing else.

python bench/_bare_server.py PORT [uvloop]   (asyncio's own loop unless uvloop is asked for)
"""

import sys

import orjson
from aiohttp import web


async def events(request: web.Request) -> web.Response:
    body = await request.read()
    orjson.loads(body)
    return web.json_response({"ids": [request.headers.get("ce-id")]}, status=202)


app = web.Application()
app.router.add_post("/events", events)
loop = None
if sys.argv[2:] == ["uvloop"]:
    import uvloop

    loop = uvloop.new_event_loop()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=loop)
