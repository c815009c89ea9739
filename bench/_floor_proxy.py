"""The floor: a minimal aiohttp pass-through proxy on uvloop, no features at all.

Used by ``bench_proxy.py`` as the cost baseline measured in the same run.
"""

import argparse

import aiohttp
import uvloop
from aiohttp import web


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    session: aiohttp.ClientSession | None = None

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        hdrs = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with session.request(
            request.method, args.upstream + request.path_qs, data=body, headers=hdrs
        ) as up:
            if up.headers.get("Content-Type", "").startswith("text/event-stream"):
                out = web.StreamResponse(
                    status=up.status, headers={"Content-Type": "text/event-stream"}
                )
                await out.prepare(request)
                async for chunk in up.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
            return web.Response(
                body=await up.read(), status=up.status, content_type=up.content_type
            )

    async def on_start(app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))

    app = web.Application()
    app.on_startup.append(on_start)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
