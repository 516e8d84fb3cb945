"""The dashboard's Starlette app: server-rendered Jinja2 pages, htmx for in-place updates.

Security: everything but /login, /healthz and /static needs an admin session (a random opaque
cookie, HttpOnly, SameSite=Strict, server-side state, rotated at login). Every POST — login
included — must carry the session's CSRF token (form field `csrf_token` or header
`X-CSRF-Token`) and, when the browser sends an Origin, come from this very host; otherwise 403.
Strict CSP (no inline script or style), no framing, no caching of pages.

Login throttling is per client address (`request.client.host`; X-Forwarded-For only from the
proxies listed in CLARA_DASHBOARD_TRUSTED_PROXIES): see `LoginThrottle`. Wrong guesses from one
client never lock out another.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from clara.dashboard.charts import line_chart
from clara.dashboard.config import DashboardSettings
from clara.dashboard.metrics import instrument_store
from clara.dashboard.service import KINDS, STATUSES, DashboardService, DashboardState, FactFilter
from storage.errors import FactNotFound, InvalidInput, ScopeDenied, StoreError
from storage.text import MAX_INT64, MAX_SCOPE_ID, unicode_problem

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "clara_dashboard"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_SESSIONS = 5000
MAX_QUERY_CHARS = 500  # the search box
MAX_PAGE = 100_000  # pages of 50 facts
# Login throttling (seconds): LOGIN_MAX_FAILURES wrong tokens within LOGIN_WINDOW lock that client out
# for LOGIN_LOCKOUT, doubling with each further lock-out up to LOGIN_LOCKOUT_MAX; at most
# LOGIN_MAX_CLIENTS clients are remembered (the least recently failing one is forgotten first).
LOGIN_WINDOW, LOGIN_MAX_FAILURES = 600.0, 10
LOGIN_LOCKOUT, LOGIN_LOCKOUT_MAX = 300.0, 3600.0
LOGIN_MAX_CLIENTS = 10_000
Clock = Callable[[], float]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


@dataclass
class _Session:
    csrf: str
    expires: float
    authed: bool = False
    flash: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Client:
    failures: deque[float]  # monotonic times of the wrong tokens since the last lock-out
    locked_until: float = 0.0
    lockouts: int = 0  # lock-outs so far (each doubles the next one's length)
    last_failure: float = 0.0


class LoginThrottle:
    """Per-client login throttle, bounded in time and in memory.

    A client (an address string) that sends `max_failures` wrong tokens within `window` seconds is
    locked out for `lockout` seconds; each further lock-out doubles that, capped at `lockout_max`.
    While locked, the client is refused even with the right token (otherwise the lock would not stop
    guessing: a 429-vs-success answer would still tell a right guess apart). Other clients are never
    affected. A client with no failure for max(`window`, `lockout_max`) seconds, and not locked, is
    forgotten (its lock-out count starts over); so is one that logs in successfully. At most
    `max_clients` clients are kept: beyond that the least recently failing one is evicted.
    `clock` returns seconds on a monotonic scale (default `time.monotonic`).
    """

    def __init__(
        self,
        *,
        max_failures: int = LOGIN_MAX_FAILURES,
        window: float = LOGIN_WINDOW,
        lockout: float = LOGIN_LOCKOUT,
        lockout_max: float = LOGIN_LOCKOUT_MAX,
        max_clients: int = LOGIN_MAX_CLIENTS,
        clock: Clock = time.monotonic,
    ):
        if max_failures < 1 or max_clients < 1 or not (0 < window and 0 < lockout <= lockout_max):
            raise ValueError(
                "LoginThrottle: need max_failures >= 1, max_clients >= 1, window > 0, 0 < lockout <= lockout_max"
            )
        self.max_failures, self.window, self.max_clients = max_failures, window, max_clients
        self.lockout, self.lockout_max = lockout, lockout_max
        self.clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again (> 0), or None when it is not locked out."""
        now = self.clock()
        c = self._clients.get(client)
        if c is None:
            return None
        if c.locked_until > now:
            return c.locked_until - now
        if now - c.last_failure > max(self.window, self.lockout_max):
            del self._clients[client]
        return None

    def failed(self, client: str) -> float | None:
        """Record a wrong token from `client`; the lock-out length in seconds if this one locks it, else None."""
        now = self.clock()
        c = self._clients.pop(client, None)
        if c is None:
            c = _Client(failures=deque(maxlen=self.max_failures))
        self._clients[client] = c  # most recently failing last
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        c.last_failure = now
        while c.failures and c.failures[0] <= now - self.window:
            c.failures.popleft()
        c.failures.append(now)
        if len(c.failures) < self.max_failures:
            return None
        c.failures.clear()
        length = min(self.lockout * 2**c.lockouts, self.lockout_max)
        c.lockouts += 1
        c.locked_until = now + length
        return length

    def succeeded(self, client: str) -> None:
        """`client` logged in: forget its failures."""
        self._clients.pop(client, None)


class _Sessions:
    """Server-side sessions in process memory (a restart logs everyone out); `ttl` in seconds of `clock`."""

    def __init__(self, ttl: float, clock: Clock = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._s: OrderedDict[str, _Session] = OrderedDict()

    def get(self, sid: str | None) -> _Session | None:
        if not sid:
            return None
        s = self._s.get(sid)
        if s is None:
            return None
        now = self.clock()
        if s.expires < now:
            self._s.pop(sid, None)
            return None
        self._s.move_to_end(sid)
        s.expires = now + self.ttl
        return s

    def new(self, authed: bool = False) -> tuple[str, _Session]:
        while len(self._s) >= MAX_SESSIONS:
            self._s.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        s = _Session(csrf=secrets.token_urlsafe(32), expires=self.clock() + self.ttl, authed=authed)
        self._s[sid] = s
        return sid, s

    def drop(self, sid: str | None) -> None:
        if sid:
            self._s.pop(sid, None)


class Dashboard:
    def __init__(self, state: DashboardState, *, clock: Clock = time.monotonic):
        self.state = state
        self.settings: DashboardSettings = state.settings or DashboardSettings()
        state.settings = self.settings
        self.token = self.settings.token
        if not self.token:
            self.token = secrets.token_urlsafe(24)
            log.warning("CLARA_DASHBOARD_TOKEN is not set: this run's dashboard login token is %s", self.token)
        self.service = DashboardService(state)
        self.sessions = _Sessions(self.settings.session_hours * 3600, clock)
        self.throttle = LoginThrottle(clock=clock)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), enable_async=False
        )
        self.env.globals.update(kinds=KINDS, statuses=STATUSES)
        self.env.filters["ts"] = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else ""
        self.env.filters["pct"] = lambda v: "" if v is None else f"{v:.0f}"
        state.errors.install()
        instrument_store(state.store, state.timings)

    # ------------------------------------------------------------------ plumbing
    def render(self, request: Request, template: str, status: int = 200, **ctx) -> HTMLResponse:
        sess: _Session | None = request.state.session
        flash = []
        if sess is not None and not template.startswith("_"):
            flash, sess.flash = sess.flash, []
        html = self.env.get_template(template).render(
            request=request,
            path=request.url.path,
            csrf=sess.csrf if sess else "",
            flash=flash,
            plugins_loaded=[n for n in ("invoices", "reminders") if self.service.plugin_loaded(n)],
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def guard(self, handler, *, auth: bool = True):
        async def endpoint(request: Request) -> Response:
            sid = request.cookies.get(COOKIE)
            sess = self.sessions.get(sid)
            request.state.session = sess
            request.state.sid = sid if sess else None
            htmx = request.headers.get("hx-request") == "true"
            if auth and not (sess and sess.authed):
                if request.method == "GET" and not htmx:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return _secure(RedirectResponse(f"/login?next={quote(target)}", status_code=303))
                resp = PlainTextResponse("login required", status_code=401)
                if htmx:
                    resp.headers["HX-Redirect"] = "/login"
                return _secure(resp)
            if request.method == "POST":
                problem = await self._csrf_problem(request, sess)
                if problem:
                    log.warning("dashboard: refused POST %s: %s", request.url.path, problem)
                    return _secure(PlainTextResponse(f"forbidden: {problem}", status_code=403))
            try:
                resp = await handler(request)
            except FactNotFound as exc:
                resp = self.render(request, "error.html", status=404, message=str(exc))
            except (InvalidInput, ScopeDenied) as exc:
                resp = self.render(request, "error.html", status=400, message=str(exc))
            except StoreError as exc:
                resp = self.render(request, "error.html", status=500, message=str(exc))
            return _secure(resp)

        return endpoint

    async def _csrf_problem(self, request: Request, sess: _Session | None) -> str | None:
        origin = request.headers.get("origin")
        if origin and origin != "null":
            if urlsplit(origin).netloc != request.headers.get("host", ""):
                return "cross-origin request"
        elif origin == "null":
            return "opaque origin"
        if sess is None:
            return "no session (reload the page)"
        sent = request.headers.get(CSRF_HEADER)
        if not sent:
            form = await request.form()
            sent = form.get(CSRF_FIELD)
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), sess.csrf.encode()):
            return "missing or wrong CSRF token"
        return None

    async def form(self, request: Request) -> dict:
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def flash(self, request: Request, kind: str, message: str) -> None:
        if request.state.session is not None:
            request.state.session.flash.append((kind, message))

    @staticmethod
    def is_htmx(request: Request) -> bool:
        return request.headers.get("hx-request") == "true"

    # ------------------------------------------------------------------ auth
    async def login_page(self, request: Request) -> Response:
        sess = request.state.session
        resp_cookie = None
        if sess is None:
            sid, sess = self.sessions.new()
            request.state.session = sess
            resp_cookie = sid
        elif sess.authed:
            return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
        resp = self.render(request, "login.html", next=_safe_next(request.query_params.get("next")), error=None)
        if resp_cookie:
            self._set_cookie(resp, resp_cookie)
        return resp

    async def login(self, request: Request) -> Response:
        ip = request.client.host if request.client else "?"
        wait = self.throttle.retry_after(ip)
        if wait is not None:
            return _too_many(wait)
        form = await self.form(request)
        given = form.get("token", "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            locked = self.throttle.failed(ip)
            error = "Wrong token."
            if locked is None:
                log.warning("dashboard: failed login from %s", ip)
            else:
                log.warning("dashboard: failed login from %s; locked out for %.0f s", ip, locked)
                error += f" Too many failed logins from this address: try again in {_secs(locked)} s."
            nxt = _safe_next(form.get("next"))
            return self.render(request, "login.html", status=401, next=nxt, error=error)
        self.throttle.succeeded(ip)
        # Rotate the session id at login (no fixation); the pre-login session is dropped.
        self.sessions.drop(request.state.sid)
        sid, sess = self.sessions.new(authed=True)
        resp = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        self._set_cookie(resp, sid)
        return resp

    async def logout(self, request: Request) -> Response:
        self.sessions.drop(request.state.sid)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    def _set_cookie(self, resp: Response, sid: str) -> None:
        resp.set_cookie(
            COOKIE,
            sid,
            max_age=int(self.settings.session_hours * 3600),
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookie,
        )

    # ------------------------------------------------------------------ pages
    async def status_page(self, request: Request) -> Response:
        return self.render(request, "status.html", **await self._status_ctx())

    async def status_live(self, request: Request) -> Response:
        return self.render(request, "_status_live.html", **await self._status_ctx())

    async def _status_ctx(self) -> dict:
        st = await self.service.status()
        growth = await self.service.growth(30)
        samples = list(self.state.timings.samples)[-200:]
        return {
            "st": st,
            "growth_chart": line_chart(
                [n for _, n in growth], labels=(growth[0][0], growth[-1][0]), title="memory growth, 30 days"
            ),
            "growth_total": growth[-1][1] if growth else 0,
            "latency_chart": line_chart(
                [s.ms for s in samples],
                labels=_span(samples),
                unit=" ms",
                title="recall latency",
            ),
        }

    async def llm_check(self, request: Request) -> Response:
        ok, message = await self.service.check_llm()
        if self.is_htmx(request):
            return self.render(request, "_llm_check.html", ok=ok, message=message)
        self.flash(request, "ok" if ok else "error", f"LLM check: {message}")
        return RedirectResponse("/", status_code=303)

    def _filter(self, request: Request) -> FactFilter:
        p = request.query_params
        page = _param(p.get("page"), "page", 20) or "0"
        if not (page.isascii() and page.isdigit()) or int(page) > MAX_PAGE:
            raise InvalidInput(f"page must be a number from 0 to {MAX_PAGE:,}, got {page[:20]!r}")
        status = p.get("status", "active")
        kind = p.get("kind", "")
        return FactFilter(
            scope=_param(p.get("scope"), "scope", MAX_SCOPE_ID),
            user=_param(p.get("user"), "user", MAX_SCOPE_ID),
            kind=kind if kind in KINDS else "",
            status=status if status in (*STATUSES, "any") else "active",
            q=_param(p.get("q"), "query", MAX_QUERY_CHARS),
            mode="text" if p.get("mode") == "text" else "recall",
            page=int(page),
        )

    async def memories(self, request: Request) -> Response:
        f = self._filter(request)
        rows, more = await self.service.search(f)
        ctx = {"f": f, "rows": rows, "more": more, "query": request.url.query}
        if self.is_htmx(request) and request.headers.get("hx-target") == "results":
            return self.render(request, "_results.html", **ctx)
        return self.render(request, "memories.html", scopes=await self.service.scopes(), **ctx)

    async def fact_page(self, request: Request) -> Response:
        detail = await self.service.fact_detail(_int(request.path_params["fact_id"]))
        return self.render(request, "fact.html", **detail)

    async def fact_row(self, request: Request) -> Response:
        fact = await self.store_get(request)
        return self.render(request, "_fact_row.html", row={"fact": fact, "score": None, "signals": {}})

    async def fact_edit_form(self, request: Request) -> Response:
        fact = await self.store_get(request)
        return self.render(request, "_fact_edit.html", fact=fact)

    async def store_get(self, request: Request):
        return await self.state.store.get(_int(request.path_params["fact_id"]))

    async def fact_edit(self, request: Request) -> Response:
        fid = _int(request.path_params["fact_id"])
        form = await self.form(request)
        new_id = await self.service.edit(
            fid,
            form.get("text", ""),
            kind=form.get("kind") or None,
            importance=form.get("importance"),
            reason=form.get("reason") or None,
        )
        if self.is_htmx(request) and request.headers.get("hx-target") == f"fact-{fid}":
            fact = await self.state.store.get(new_id)
            return self.render(request, "_fact_row.html", row={"fact": fact, "score": None, "signals": {}})
        self.flash(request, "ok", f"Fact #{fid} superseded by #{new_id} (the old version is kept in its history).")
        return RedirectResponse(f"/facts/{new_id}", status_code=303)

    async def fact_forget(self, request: Request) -> Response:
        fid = _int(request.path_params["fact_id"])
        await self.service.forget(fid)
        if self.is_htmx(request) and request.headers.get("hx-target") == f"fact-{fid}":
            fact = await self.state.store.get(fid)
            return self.render(request, "_fact_row.html", row={"fact": fact, "score": None, "signals": {}})
        self.flash(request, "ok", f"Fact #{fid} forgotten (soft-deleted: no longer recalled, history kept).")
        if self.is_htmx(request):
            return Response("", headers={"HX-Redirect": f"/facts/{fid}"})
        return RedirectResponse(f"/facts/{fid}", status_code=303)

    async def purge_user(self, request: Request) -> Response:
        form = await self.form(request)
        user, confirm = _param(form.get("user"), "user", MAX_SCOPE_ID), _param(form.get("confirm"), "confirm", 1000)
        if not user or confirm != user:
            self.flash(request, "error", "Not purged: type the user id again in the confirmation box.")
            return RedirectResponse(f"/memories?user={quote(user)}", status_code=303)
        result = await self.service.purge_user(user)
        r = result["report"]
        self.flash(
            request,
            "ok",
            f"Purged {user}: {r.facts} facts, {r.messages} messages, {r.entities} entities, {r.scopes} scopes "
            f"erased; {result['summaries_rebuilt']} channel summaries rebuilt.",
        )
        return RedirectResponse("/memories", status_code=303)

    async def entities(self, request: Request) -> Response:
        p = request.query_params
        q, scope = _param(p.get("q"), "query", MAX_QUERY_CHARS), _param(p.get("scope"), "scope", MAX_SCOPE_ID)
        rows = await self.service.entities(q=q, scope=scope)
        return self.render(request, "entities.html", rows=rows, q=q, scope=scope)

    async def entity_page(self, request: Request) -> Response:
        detail = await self.service.entity_detail(_int(request.path_params["entity_id"]))
        return self.render(request, "entity.html", **detail)

    async def entity_merge(self, request: Request) -> Response:
        form = await self.form(request)
        keep, merge = _int(form.get("keep", "")), _int(form.get("merge", ""))
        result = await self.service.merge_entities(keep, merge)
        self.flash(
            request,
            "ok",
            f"Merged “{result['merged']}” into “{result['kept']}” ({result['facts_moved']} facts, "
            f"{result['relations_moved']} relations moved).",
        )
        if self.is_htmx(request):
            return Response("", headers={"HX-Redirect": f"/entities/{keep}"})
        return RedirectResponse(f"/entities/{keep}", status_code=303)

    async def sessions_page(self, request: Request) -> Response:
        user = _param(request.query_params.get("user"), "user", MAX_SCOPE_ID)
        status = request.query_params.get("status", "")
        rows = await self.service.sessions(user=user, status=status if status in ("open", "closed") else "")
        return self.render(request, "sessions.html", rows=rows, user=user, status_filter=status)

    async def session_page(self, request: Request) -> Response:
        detail = await self.service.session_detail(_int(request.path_params["session_id"]))
        return self.render(request, "session.html", **detail)

    async def plugin_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("invoices", "reminders") or not self.service.plugin_loaded(name):
            raise FactNotFound(f"plugin {name!r} is not loaded")
        return self.render(request, "plugin.html", name=name, tables=await self.service.plugin_tables(name))

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    # ------------------------------------------------------------------ app
    def app(self) -> Starlette:
        g = self.guard
        routes = [
            Route("/healthz", self.healthz),
            Route("/login", g(self.login_page, auth=False), methods=["GET"]),
            Route("/login", g(self.login, auth=False), methods=["POST"]),
            Route("/logout", g(self.logout), methods=["POST"]),
            Route("/", g(self.status_page)),
            Route("/status/live", g(self.status_live)),
            Route("/status/llm-check", g(self.llm_check), methods=["POST"]),
            Route("/memories", g(self.memories)),
            Route("/facts/{fact_id}", g(self.fact_page)),
            Route("/facts/{fact_id}/row", g(self.fact_row)),
            Route("/facts/{fact_id}/edit", g(self.fact_edit_form), methods=["GET"]),
            Route("/facts/{fact_id}/edit", g(self.fact_edit), methods=["POST"]),
            Route("/facts/{fact_id}/supersede", g(self.fact_edit), methods=["POST"]),
            Route("/facts/{fact_id}/forget", g(self.fact_forget), methods=["POST"]),
            Route("/users/purge", g(self.purge_user), methods=["POST"]),
            Route("/entities", g(self.entities)),
            Route("/entities/merge", g(self.entity_merge), methods=["POST"]),
            Route("/entities/{entity_id}", g(self.entity_page)),
            Route("/sessions", g(self.sessions_page)),
            Route("/sessions/{session_id}", g(self.session_page)),
            Route("/plugins/{name}", g(self.plugin_page)),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
        proxies = self.settings.trusted_proxy_list
        # X-Forwarded-For rewrites request.client only when it comes from a listed proxy.
        middleware = [Middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)] if proxies else []
        app = Starlette(routes=routes, middleware=middleware)
        app.state.dashboard = self
        return app


def _span(samples) -> tuple[str, str]:
    if not samples:
        return ("", "")
    return (samples[0].at.strftime("%H:%M:%S"), samples[-1].at.strftime("%H:%M:%S"))


def _int(value) -> int:
    """An id from a path or form: ASCII digits, 1 to 2**63-1 (what SQL stores)."""
    s = str(value).strip()
    if not (s.isascii() and s.isdigit()) or len(s) > 19 or not 0 < int(s) <= MAX_INT64:
        raise InvalidInput(f"not an id: {s[:40]!r}")
    return int(s)


def _param(value: str | None, what: str, most: int) -> str:
    """A text query parameter or form field, stripped: refused (with the limit named) when too
    long, or when it holds a NUL byte or invalid Unicode, never cut."""
    value = (value or "").strip()
    if len(value) > most:
        raise InvalidInput(f"{what} is too long: {len(value):,} characters (max {most:,})")
    if "\x00" in value or unicode_problem(value):
        raise InvalidInput(f"{what} is not plain text (a NUL byte or invalid Unicode)")
    return value


def _secs(wait: float) -> int:
    return max(1, math.ceil(wait))


def _too_many(wait: float) -> Response:
    secs = _secs(wait)
    return PlainTextResponse(
        f"too many failed logins from this address; try again in {secs} s",
        status_code=429,
        headers={"Retry-After": str(secs)},
    )


def _safe_next(value: str | None) -> str:
    """Only local paths (no scheme, no //host) — no open redirect after login."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _secure(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Chromium send Origin: null
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def create_app(state: DashboardState, *, clock: Clock = time.monotonic) -> Starlette:
    """The ASGI app for `state` (attach store, and optionally engine, plugins, bot, llm).

    `clock` (seconds, monotonic) times sessions and login lock-outs; tests pass a fake one.
    The `Dashboard` is at `app.state.dashboard`."""
    return Dashboard(state, clock=clock).app()
