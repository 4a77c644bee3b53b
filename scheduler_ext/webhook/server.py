"""HTTP routes of the webhook: POST /validate (AdmissionReview), GET /healthz, GET /metrics."""

from __future__ import annotations

import logging
import time

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from scheduler_ext.webhook.admission import QuotaAdmission
from scheduler_ext.webhook.wire import decode_review, encode_response

log = logging.getLogger(__name__)

ADMISSION_KEY: web.AppKey[QuotaAdmission] = web.AppKey("admission", QuotaAdmission)
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)


def make_app(admission: QuotaAdmission) -> web.Application:
    registry = CollectorRegistry()
    latency = Histogram("cell_quota_admission_seconds", "Time to decide one AdmissionReview.", ["kind"],
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5), registry=registry)
    decisions = Counter("cell_quota_admission_decisions_total", "AdmissionReviews answered.", ["kind", "allowed"],
                        registry=registry)

    async def validate(request: web.Request) -> web.Response:
        body = await request.read()
        started = time.perf_counter()  # the webhook's own time: decode, decide, encode
        try:
            review = decode_review(body)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than msgspec follows; a bad body, not a webhook fault.
            return web.json_response({"error": f"not an admission.k8s.io/v1 AdmissionReview: {exc}"}, status=400)
        req = review.request
        try:
            decision = await admission.review(req)
        except Exception:
            # Fail closed, with a message, rather than an HTTP 500 the API server reports vaguely.
            log.exception("admission of %s %s/%s failed", req.kind.kind, req.namespace, req.name)
            allowed, message = False, f"quota webhook error while checking {req.kind.kind} {req.namespace}/{req.name}"
        else:
            allowed, message = decision.allowed, decision.message
        kind = req.kind.kind + (f"/{req.sub_resource}" if req.sub_resource else "")
        latency.labels(kind).observe(time.perf_counter() - started)
        decisions.labels(kind, str(allowed).lower()).inc()
        if not allowed:
            log.info("denied %s %s %s/%s: %s", req.operation, kind, req.namespace, req.name, message)
        return web.Response(body=encode_response(req.uid, allowed, message), content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        cache = admission.cache
        if cache.synced():
            return web.Response(text="ok")
        return web.Response(text=f"cache not synced: {', '.join(cache.unsynced()) or 'starting'}", status=503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app[ADMISSION_KEY] = admission
    app[REGISTRY_KEY] = registry
    app.add_routes([web.post("/validate", validate), web.get("/healthz", healthz), web.get("/metrics", metrics)])
    return app
