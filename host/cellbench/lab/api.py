"""The lab's HTTP API and page (aiohttp): JSON under /api, documented by /api/openapi.json.

Requests are checked before anything happens: a body that is not JSON is 400, a bad
field 422 with ``{"error": "<field>: <message>", "field": "<field>"}`` (the CLI's
one-line error), an unknown channel or job 404, an action the job's state does not allow
409. With a token (always when the service listens beyond localhost), every request that
changes something (POST) needs ``Authorization: Bearer <token>``, else 401; reading does
not. Live updates go out as server-sent events on /api/events, one JSON object per event
(``type``: state, cycle, event), pushed as the records arrive.
"""

import asyncio
import hmac
import json
from pathlib import Path

from aiohttp import web

from .. import __version__, bdflog
from ..errors import InputError
from ..paths import MODELS, PROTOCOLS
from .jobs import library
from .channel import public_job
from .live import logged_cycles
from .openapi import spec
from .service import Conflict, NotFound

STATIC = Path(__file__).resolve().parent / "static"
MAX_POINTS = 4000       # points per series a channel page gets on load (evenly thinned)
KEEPALIVE_S = 15.0      # an SSE comment this often keeps proxies from closing the stream
ACTIONS = ("pause", "resume", "stop")


def _field(message):
    return message.split(":", 1)[0].strip()


def error(status, message):
    return web.json_response({"error": message, "field": _field(message)}, status=status)


@web.middleware
async def errors(request, handler):
    try:
        return await handler(request)
    except InputError as exc:
        return error(422, str(exc))
    except NotFound as exc:
        return error(404, str(exc))
    except Conflict as exc:
        return error(409, str(exc))


def make_app(lab, token=None):
    """The aiohttp application of ``lab``; ``token``: required on POST when set."""

    @web.middleware
    async def auth(request, handler):
        if token and request.method not in ("GET", "HEAD", "OPTIONS"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "token: this lab needs 'Authorization: Bearer <token>' "
                                  "for requests that change something")
        return await handler(request)

    app = web.Application(middlewares=[errors, auth])
    app["lab"] = lab
    r = app.router
    r.add_get("/", page("index.html"))
    r.add_get("/channel/{cid}", page("channel.html"))
    r.add_static("/static/", STATIC, follow_symlinks=False)
    r.add_get("/favicon.ico", lambda req: web.Response(status=204))
    for method, path, handler in ROUTES:
        r.add_route(method, path, handler)

    async def attach(app):
        lab.hub.attach(asyncio.get_running_loop())

    app.on_startup.append(attach)
    return app


def page(name):
    async def handler(request):
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
    return handler


async def body_of(request):
    """The request's JSON body; 400 (as InputError's 422 would mislead) when not JSON."""
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body: not valid JSON", "field": "body"}),
                                 content_type="application/json") from None


def _job_id(request):
    try:
        return int(request.match_info["jid"])
    except ValueError:
        raise NotFound(f"job: no job {request.match_info['jid']!r}") from None


async def lab_view(request):
    lab = request.app["lab"]
    return web.json_response(dict(lab.overview(), version=__version__))


async def channels_view(request):
    lab = request.app["lab"]
    return web.json_response([ch.state() for ch in lab.channels.values()])


async def add_channel(request):
    lab = request.app["lab"]
    ch = lab.add_sim_channel(await body_of(request))
    return web.json_response(ch.state(), status=201)


async def channel_view(request):
    lab = request.app["lab"]
    ch = lab.channel(request.match_info["cid"])
    return web.json_response(dict(ch.state(), jobs=[public_job(j) for j in lab.db.jobs(ch.id)],
                                  cycles=ch.cycles()))


async def release(request):
    lab = request.app["lab"]
    lab.release(request.match_info["cid"])
    return web.json_response(lab.channel(request.match_info["cid"]).state())


async def queue_job(request):
    lab = request.app["lab"]
    cid = request.match_info["cid"]
    lab.channel(cid)  # 404 before the body is looked at
    job = lab.queue_job(cid, await body_of(request))
    return web.json_response(job, status=201)


async def jobs_view(request):
    lab = request.app["lab"]
    cid = request.query.get("channel")
    return web.json_response([public_job(j) for j in lab.db.jobs(cid)])


async def job_view(request):
    return web.json_response(public_job(request.app["lab"].job(_job_id(request))))


async def job_action(request):
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise NotFound(f"action: no action {action!r} (known: {', '.join(ACTIONS)})")
    lab = request.app["lab"]
    return web.json_response(lab.act(_job_id(request), action), status=202)


def _log_of(request):
    job = request.app["lab"].job(_job_id(request))
    if not job["log_path"] or not Path(job["log_path"]).is_file():
        raise NotFound(f"log: job {job['id']} has no log yet")
    return Path(job["log_path"])


async def job_log(request):
    path = _log_of(request)
    return web.FileResponse(path, headers={
        "Content-Type": "text/csv", "Content-Disposition": f'attachment; filename="{path.name}"'})


async def job_sidecar(request):
    path = bdflog.existing_sidecar_path(_log_of(request))
    if path is None:
        raise NotFound("sidecar: none yet")
    return web.FileResponse(path, headers={
        "Content-Type": "application/json",
        "Content-Disposition": f'attachment; filename="{path.name}"'})


def read_series(path):
    """A logged run thinned for plotting: t_s, v_V, i_mA, soc, soc_std lists and cycles."""
    try:
        log = bdflog.read_log(path) if path else None
    except InputError:
        log = None
    if log is None:
        return {"t_s": [], "v_V": [], "i_mA": [], "soc": [], "soc_std": [], "cycles": [], "last_seq": -1}
    n = len(log["Test Time / s"])
    step = max(1, -(-n // MAX_POINTS))

    def col(name, scale=1.0):
        values = log.get(name)
        if values is None:
            return [None] * len(range(0, n, step))
        return [None if v != v else round(float(v) * scale, 7) for v in values[::step]]

    return {"t_s": col("Test Time / s"), "v_V": col("Voltage / V"), "i_mA": col("Current / A", 1e3),
            "soc": col("SOC / 1"), "soc_std": col("SOC Std / 1"),
            "last_seq": int(log["Record Seq / 1"][-1]) if n else -1,
            "cycles": logged_cycles(log).rows}


async def series(request):
    lab = request.app["lab"]
    ch = lab.channel(request.match_info["cid"])
    job_id = request.query.get("job")
    jobs = lab.db.jobs(ch.id)
    if job_id is not None:
        jobs = [j for j in jobs if str(j["id"]) == job_id]
    logged = [j for j in jobs if j["log_path"] and Path(j["log_path"]).is_file()]
    if not logged:
        return web.json_response(dict(read_series(None), job=None))
    job = logged[-1]
    data = await asyncio.get_running_loop().run_in_executor(None, read_series, job["log_path"])
    return web.json_response(dict(data, job=job["id"]))


async def history(request):
    lab = request.app["lab"]
    return web.json_response(lab.db.events(request.query.get("channel"),
                                           limit=min(500, int(request.query.get("limit", 50)))))


async def events(request):
    """Server-sent events: every hub message, or those of ``?channel=<id>``."""
    lab = request.app["lab"]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    sub = lab.hub.subscribe(request.query.get("channel"))
    try:
        await resp.write(b"retry: 1000\n\n")
        while True:
            try:
                first = await asyncio.wait_for(sub.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            await resp.write(b"".join(f"data: {text}\n\n".encode() for text in [first] + sub.drain()))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        lab.hub.unsubscribe(sub)
    return resp


async def openapi(request):
    return web.json_response(spec(__version__))


async def protocols(request):
    return web.json_response(library(PROTOCOLS))


async def models(request):
    return web.json_response(library(MODELS))


ROUTES = (
    ("GET", "/api/openapi.json", openapi),
    ("GET", "/api/lab", lab_view),
    ("GET", "/api/protocols", protocols),
    ("GET", "/api/models", models),
    ("GET", "/api/channels", channels_view),
    ("POST", "/api/channels", add_channel),
    ("GET", "/api/channels/{cid}", channel_view),
    ("POST", "/api/channels/{cid}/release", release),
    ("GET", "/api/channels/{cid}/series", series),
    ("POST", "/api/channels/{cid}/jobs", queue_job),
    ("GET", "/api/jobs", jobs_view),
    ("GET", "/api/jobs/{jid}", job_view),
    ("POST", "/api/jobs/{jid}/{action}", job_action),
    ("GET", "/api/jobs/{jid}/log", job_log),
    ("GET", "/api/jobs/{jid}/sidecar", job_sidecar),
    ("GET", "/api/events", events),
    ("GET", "/api/history", history),
)
