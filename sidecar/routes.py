"""HTTP routes: the OpenAI surface, health and readiness, and a catch-all pass-through."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from sidecar import __version__, semconv
from sidecar.runtime import RUNTIME, Runtime, readiness
from sidecar.errors import BadRequestError, NotFoundError, RequestError
from sidecar.pipeline.ingress import parse_json_object, read_body
from sidecar.pipeline.responses import plain_error_response


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def setup_routes(app: web.Application, runtime: Runtime) -> None:
    proxy = runtime.proxy

    async def healthz(_request: web.Request) -> web.Response:
        return _json({"status": "ok", "version": __version__})

    async def readyz(request: web.Request) -> web.Response:
        rt = request.app[RUNTIME]
        ready, body = readiness(rt, await rt.upstreams.primary.client.probe())
        return _json(body, 200 if ready else 503)

    async def guardrails_check(request: web.Request) -> web.Response:
        """Run a stage's detectors and the policy on one text, without proxying."""
        rt = request.app[RUNTIME]
        try:
            body = parse_json_object(await read_body(request, rt.settings.server.max_body_bytes))
            text, stage = body.get("text"), body.get("stage", "input")
            if not isinstance(text, str):
                raise BadRequestError("'text' must be a string", param="text", code="invalid_type")
            if stage not in ("input", "output"):
                raise BadRequestError("'stage' must be 'input' or 'output'", param="stage",
                                      code="invalid_type")
            route_name = body.get("route")
            response_format = body.get("response_format")
            if response_format is not None and not isinstance(response_format, dict):
                raise BadRequestError("'response_format' must be an object",
                                      param="response_format", code="invalid_type")
            if rt.guard is None:
                raise NotFoundError("guardrails are disabled on this sidecar",
                                    code="guardrails_disabled")
            if route_name is None:
                route = rt.guard.route_for("/v1/chat/completions", None, None)
            elif isinstance(route_name, str):
                route = rt.guard.route_named(route_name)
                if route is None:
                    raise BadRequestError(f"no policy route named '{route_name}'",
                                          param="route", code="unknown_route")
            else:
                raise BadRequestError("'route' must be a string", param="route",
                                      code="invalid_type")
        except RequestError as exc:
            return plain_error_response(exc)
        result = await rt.guard.check_text(text, stage, route, response_format)
        return _json(result)

    async def metrics(request: web.Request) -> web.Response:
        """Prometheus exposition; rendering runs in a thread (it can take tens of ms)."""
        rt = request.app[RUNTIME]
        if rt.metrics is None:
            return web.Response(status=404, text="metrics are disabled\n")
        body, content_type = await asyncio.to_thread(
            rt.metrics.render, request.headers.get("Accept")
        )
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(_request: web.Request) -> web.Response:
        from sidecar.openapi import document

        return _json(document())

    router = app.router
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)
    router.add_post("/v1/chat/completions", proxy.openai_handler(semconv.OP_CHAT))
    router.add_post("/v1/completions", proxy.openai_handler(semconv.OP_TEXT_COMPLETION))
    router.add_post("/v1/embeddings", proxy.openai_handler(semconv.OP_EMBEDDINGS))
    router.add_get("/v1/models", proxy.passthrough_handler(semconv.OP_MODELS))
    router.add_post("/v1/guardrails/check", guardrails_check)
    from sidecar.sdk.ingest import setup_sdk_routes

    setup_sdk_routes(app, runtime.settings, runtime.guard, runtime.emitter,
                     runtime.signals.issued.add)
    from sidecar.feedback import setup_feedback_routes
    from sidecar.feedback_gate import FeedbackGate

    gate = FeedbackGate(runtime.settings.feedback, runtime.signals.issued, proxy.limiter)
    setup_feedback_routes(
        app, runtime.feedback_store, signals=runtime.signals,
        store_text=runtime.settings.privacy.capture != "none", gate=gate,
        privacy=runtime.privacy,
    )
    if runtime.handoff is not None and runtime.review_auth is not None:
        from sidecar.handoff.routes import setup_handoff_routes

        setup_handoff_routes(app, runtime.handoff, runtime.review_auth, limiter=proxy.limiter)
    if runtime.metrics is not None:
        from exporters.prometheus.sources import abuse_source

        review_auth = runtime.review_auth
        runtime.metrics.add_state_source("abuse", abuse_source(lambda: {
            **gate.state(),
            "login_lockouts": review_auth.throttle.lockouts if review_auth is not None else 0,
        }))
    router.add_get("/openapi.json", openapi)
    from sidecar.dashboard import wiring as dashboard

    dashboard.setup(app, runtime)  # /dashboard and the hand-off backlog gauges
    # last: everything else ([\s\S]: a path with a decoded newline must reach the proxy,
    # which refuses it in the OpenAI shape, not aiohttp's text/plain 404)
    router.add_route("*", "/{tail:[\\s\\S]*}", proxy.passthrough_handler())
