"""The web dashboard (clara/dashboard) over HTTP: login and CSRF on every action, every page,
edit/supersede/forget/purge/merge really changing the store, and the server start/stop."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import httpx
import pytest

from clara.chat import ChatEngine, IncomingMessage
from clara.dashboard import DashboardSettings, DashboardState, create_app, start

TOKEN = "test-token-1234567890"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def msg(text: str, user: str = "alice", channel: str = "general") -> IncomingMessage:
    return IncomingMessage(user_id=user, display_name=user.title(), channel_id=channel, text=text)


def make_state(store, **kw) -> DashboardState:
    return DashboardState(store, settings=DashboardSettings(token=TOKEN, port=0), **kw)


@pytest.fixture
async def state(store):
    st = make_state(store)
    yield st
    st.errors.uninstall()


def client_for(state) -> httpx.AsyncClient:
    app = create_app(state)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def login(client: httpx.AsyncClient) -> str:
    page = await client.get("/login")
    assert page.status_code == 200
    csrf = CSRF_RE.search(page.text).group(1)
    r = await client.post("/login", data={"token": TOKEN, "csrf_token": csrf, "next": "/memories"})
    assert r.status_code == 303 and r.headers["location"] == "/memories"
    return await csrf_of(client)


async def results(client: httpx.AsyncClient, **params) -> str:
    """The search results fragment only (as htmx asks for it): no echo of the query box."""
    r = await client.get("/memories", params=params, headers={"HX-Request": "true", "HX-Target": "results"})
    assert r.status_code == 200 and "<html" not in r.text
    return r.text


async def csrf_of(client: httpx.AsyncClient, path: str = "/memories") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return CSRF_RE.search(page.text).group(1)


@pytest.fixture
async def client(state):
    async with client_for(state) as c:
        c.csrf = await login(c)
        yield c


GET_PAGES = ["/", "/status/live", "/memories", "/memories?q=x", "/entities", "/sessions", "/facts/1", "/entities/1"]
POSTS = [
    ("/facts/{id}/edit", {"text": "changed"}),
    ("/facts/{id}/supersede", {"text": "changed", "kind": "note"}),
    ("/facts/{id}/forget", {}),
    ("/users/purge", {"user": "alice", "confirm": "alice"}),
    ("/entities/merge", {"keep": "1", "merge": "2"}),
    ("/status/llm-check", {}),
    ("/logout", {}),
]


# ---------------------------------------------------------------------------------- auth
async def test_nothing_readable_without_login(state, store):
    await store.ensure_scope("user:alice", "user", owner="alice")
    fid = await store.add("Alice's bank PIN is 4321", "user:alice", created_by="alice")
    async with client_for(state) as c:
        for path in [*GET_PAGES, f"/facts/{fid}", "/plugins/invoices", "/sessions/1", "/facts/1/row"]:
            r = await c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
            assert "4321" not in r.text
            r = await c.get(path, headers={"HX-Request": "true"})
            assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login", path
        for path, data in POSTS:
            r = await c.post(path.format(id=fid), data=data)
            assert r.status_code == 401, path
        assert (await c.get("/healthz")).text == "ok"
        js = await c.get("/static/htmx.min.js")
        assert js.status_code == 200 and "htmx" in js.text[:2000]
        assert (await c.get("/static/htmx.LICENSE")).status_code == 200
    assert (await store.get(fid)).status == "active"


async def test_login_token_csrf_rotation_and_headers(state):
    async with client_for(state) as c:
        page = await c.get("/login?next=//evil.example/x")
        assert page.status_code == 200 and 'name="viewport"' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        csrf = CSRF_RE.search(page.text).group(1)
        pre_login = c.cookies["clara_dashboard"]
        # Login itself is CSRF-protected.
        assert (await c.post("/login", data={"token": TOKEN})).status_code == 403
        assert (await c.post("/login", data={"token": TOKEN, "csrf_token": "nope"})).status_code == 403
        wrong = await c.post("/login", data={"token": "guess", "csrf_token": csrf})
        assert wrong.status_code == 401 and "Wrong token" in wrong.text
        assert (await c.get("/")).status_code == 303
        ok = await c.post("/login", data={"token": TOKEN, "csrf_token": csrf, "next": "//evil.example/x"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
        assert c.cookies["clara_dashboard"] != pre_login  # session id rotated at login
        assert (await c.get("/")).status_code == 200
        csrf = await csrf_of(c)
        # Logout needs CSRF too, then the session is gone server-side.
        assert (await c.post("/logout")).status_code == 403
        assert (await c.post("/logout", data={"csrf_token": csrf})).status_code == 303
        assert (await c.get("/")).status_code == 303


async def test_login_attempts_are_rate_limited(state):
    async with client_for(state) as c:
        csrf = CSRF_RE.search((await c.get("/login")).text).group(1)
        for _ in range(10):
            assert (await c.post("/login", data={"token": "bad", "csrf_token": csrf})).status_code == 401
        r = await c.post("/login", data={"token": TOKEN, "csrf_token": csrf})
        assert r.status_code == 429


class FakeClock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def client_at(app, host: str) -> httpx.AsyncClient:
    """A browser at address `host` (what the app sees as request.client.host)."""
    transport = httpx.ASGITransport(app=app, client=(host, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def try_login(c: httpx.AsyncClient, token: str, headers: dict | None = None) -> httpx.Response:
    if "clara_dashboard" not in c.cookies:
        c.csrf = CSRF_RE.search((await c.get("/login")).text).group(1)
    return await c.post("/login", data={"token": token, "csrf_token": c.csrf}, headers=headers or {})


async def test_login_throttle_is_per_client_bounded_and_expires(state):
    clock = FakeClock()
    app = create_app(state, clock=clock)
    async with client_at(app, "198.51.100.7") as a, client_at(app, "198.51.100.8") as b:
        for _ in range(9):
            assert (await try_login(a, "bad")).status_code == 401
        tenth = await try_login(a, "bad")
        assert tenth.status_code == 401 and "try again in 300 s" in tenth.text
        # A is locked: even the right token is refused, with when to retry.
        r = await try_login(a, TOKEN)
        assert r.status_code == 429 and r.headers["Retry-After"] == "300"
        assert "too many failed logins from this address; try again in 300 s" in r.text
        # B is not affected at all, right now.
        ok = await try_login(b, TOKEN)
        assert ok.status_code == 303 and (await b.get("/")).status_code == 200
        clock.now += 299.5
        r = await try_login(a, TOKEN)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        clock.now += 0.6  # the lock-out is over
        assert (await try_login(a, TOKEN)).status_code == 303
        assert (await a.get("/")).status_code == 200


async def test_sessions_expire_on_the_monotonic_clock(state):
    clock = FakeClock()
    app = create_app(state, clock=clock)
    async with client_at(app, "198.51.100.9") as c:
        assert (await try_login(c, TOKEN)).status_code == 303
        clock.now += 12 * 3600 - 1  # session_hours=12; every request renews the session
        assert (await c.get("/")).status_code == 200
        clock.now += 12 * 3600 + 1
        assert (await c.get("/")).status_code == 303


async def test_login_lockouts_grow_capped_and_are_forgotten():
    from clara.dashboard.app import LoginThrottle

    clock = FakeClock()
    t = LoginThrottle(max_failures=3, window=60, lockout=10, lockout_max=35, clock=clock)

    def lock_out(client: str = "a") -> float:
        assert t.retry_after(client) is None
        assert t.failed(client) is None and t.failed(client) is None
        length = t.failed(client)
        assert t.retry_after(client) == length
        clock.now += length
        return length

    assert [lock_out() for _ in range(4)] == [10, 20, 35, 35]  # doubles, capped at lockout_max
    # Failures outside the window do not add up.
    assert t.failed("a") is None and t.failed("a") is None
    clock.now += 61
    assert t.failed("a") is None and t.retry_after("a") is None
    # Quiet for max(window, lockout_max) (and not locked): forgotten, the next lock-out is short again.
    clock.now += 61
    assert t.retry_after("a") is None and len(t) == 0
    assert lock_out() == 10
    with pytest.raises(ValueError, match="lockout <= lockout_max"):
        LoginThrottle(lockout=10, lockout_max=5)


async def test_login_throttle_memory_is_bounded(state):
    from clara.dashboard.app import LoginThrottle

    clock = FakeClock()
    t = LoginThrottle(max_failures=2, max_clients=50, clock=clock)
    for i in range(1000):
        t.failed(f"10.0.{i // 250}.{i % 250}")
        t.failed(f"10.0.{i // 250}.{i % 250}")
        assert len(t) <= 50
    assert t.retry_after("10.0.3.249") is not None  # the most recent stay locked
    assert t.retry_after("10.0.0.0") is None  # the least recently failing were evicted
    assert all(len(c.failures) <= 2 for c in t._clients.values())
    # The app's own table is bounded the same way.
    app = create_app(state, clock=clock)
    dash = app.state.dashboard
    dash.throttle.max_clients = 5
    for i in range(12):
        async with client_at(app, f"192.0.2.{i}") as c:
            assert (await try_login(c, "bad")).status_code == 401
            assert len(dash.throttle) <= 5
    assert len(dash.throttle) == 5


async def test_forwarded_for_is_believed_only_from_trusted_proxies(store):
    from pydantic import ValidationError

    # Default: X-Forwarded-For is ignored, also over real TCP (uvicorn alone would believe it from 127.0.0.1).
    st = make_state(store)
    server = await start(st, host="127.0.0.1", port=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            for i in range(10):
                assert (await try_login(c, "bad", {"X-Forwarded-For": f"203.0.113.{i}"})).status_code == 401
            r = await try_login(c, TOKEN, {"X-Forwarded-For": "203.0.113.99"})
            assert r.status_code == 429
    finally:
        await server.stop()
        st.errors.uninstall()
    # With a trusted proxy, its X-Forwarded-For names the client; anyone else's is ignored.
    proxied = DashboardSettings(token=TOKEN, port=0, trusted_proxies=" 10.9.9.9, 10.8.0.0/16")
    st = DashboardState(store, settings=proxied)
    try:
        app = create_app(st)
        async with client_at(app, "10.9.9.9") as proxy, client_at(app, "10.0.0.7") as direct:
            for _ in range(10):
                assert (await try_login(proxy, "bad", {"X-Forwarded-For": "203.0.113.5"})).status_code == 401
                assert (await try_login(direct, "bad", {"X-Forwarded-For": "203.0.113.6"})).status_code == 401
            assert (await try_login(proxy, TOKEN, {"X-Forwarded-For": "203.0.113.5"})).status_code == 429
            assert (await try_login(direct, TOKEN, {"X-Forwarded-For": "203.0.113.7"})).status_code == 429
            assert (await try_login(proxy, TOKEN, {"X-Forwarded-For": "203.0.113.6"})).status_code == 303
    finally:
        st.errors.uninstall()
    with pytest.raises(ValidationError, match="'proxy.local' is not an IP address or CIDR network"):
        DashboardSettings(token=TOKEN, trusted_proxies="127.0.0.1,proxy.local")


async def test_every_action_needs_the_csrf_token(client, store):
    await store.ensure_scope("user:alice", "user", owner="alice")
    fid = await store.add("Alice likes oolong tea", "user:alice", created_by="alice", entities=["oolong", "tea"])
    for path, data in POSTS:
        url = path.format(id=fid)
        assert (await client.post(url, data=data)).status_code == 403, url
        assert (await client.post(url, data={**data, "csrf_token": "forged"})).status_code == 403, url
        assert (await client.post(url, data=data, headers={"X-CSRF-Token": "forged"})).status_code == 403, url
        # Right token, but sent from another site.
        cross = await client.post(url, data={**data, "csrf_token": client.csrf}, headers={"Origin": "http://evil.test"})
        assert cross.status_code == 403, url
    assert (await store.get(fid)).status == "active"
    assert await store.count_facts(["user:alice"]) == 1
    assert (await client.get("/")).status_code == 200  # still logged in


# ---------------------------------------------------------------------------------- memories
async def test_search_edit_supersede_and_forget(client, store):
    await store.ensure_scope("user:alice", "user", owner="alice")
    await store.ensure_scope("user:bob", "user", owner="bob")
    fid = await store.add("Alice's sister Anna lives in Porto", "user:alice", created_by="alice", kind="biographical")
    await store.add("Bob plays the cello", "user:bob", created_by="bob")
    await store.drain()

    listing = await client.get("/memories")
    assert "Anna lives in Porto" in listing.text and "cello" in listing.text
    only_bob = await client.get("/memories", params={"user": "bob"})
    assert "cello" in only_bob.text and "Porto" not in only_bob.text
    kind = await client.get("/memories", params={"kind": "biographical"})
    assert "Porto" in kind.text and "cello" not in kind.text
    # Hybrid recall (the chat's store.recall) and plain text, as a page and as an htmx fragment.
    hits = await client.get("/memories", params={"q": "where does my sister live"})
    assert "Anna lives in Porto" in hits.text and "score" in hits.text
    frag = await client.get(
        "/memories", params={"q": "cello", "mode": "text"}, headers={"HX-Request": "true", "HX-Target": "results"}
    )
    assert "Bob plays the cello" in frag.text and "<html" not in frag.text
    assert "cello" not in await results(client, q="cello", user="alice")
    assert "cello" not in await results(client, q="cello", mode="text", user="alice")

    detail = await client.get(f"/facts/{fid}")
    assert detail.status_code == 200 and "Anna lives in Porto" in detail.text and "user:alice" in detail.text

    # Edit = supersede with the new text; the old version stays in the history.
    r = await client.post(
        f"/facts/{fid}/edit", data={"text": "Alice's sister Anna lives in Lisbon", "csrf_token": client.csrf}
    )
    assert r.status_code == 303
    new_id = int(r.headers["location"].rsplit("/", 1)[1])
    old, new = await store.get(fid), await store.get(new_id)
    assert old.status == "superseded" and old.superseded_by_id == new_id and new.supersedes_id == fid
    assert new.content == "Alice's sister Anna lives in Lisbon" and new.kind == "biographical"
    page = await client.get(f"/facts/{new_id}")
    assert "Versions" in page.text and "Porto" in page.text and "Lisbon" in page.text
    assert "superseded by" in page.text or "supersede" in page.text
    assert [h.action for h in await store.history(fid)][-1] == "supersede"

    # Supersede with a new kind/importance/reason; htmx variant returns the table row.
    r = await client.post(
        f"/facts/{new_id}/supersede",
        data={"text": "Anna moved to Lisbon in 2024", "kind": "event", "importance": "0.9", "reason": "corrected"},
        headers={"HX-Request": "true", "HX-Target": f"fact-{new_id}", "X-CSRF-Token": client.csrf},
    )
    assert r.status_code == 200 and r.text.lstrip().startswith("<tr") and "moved to Lisbon" in r.text
    third = (await store.list_facts(["user:alice"]))[0]
    assert third.kind == "event" and third.importance == 0.9 and third.context == "corrected"
    # Bad input: 400 and nothing changed.
    bad = await client.post(f"/facts/{third.id}/edit", data={"text": "  ", "csrf_token": client.csrf})
    assert bad.status_code == 400 and (await store.get(third.id)).status == "active"
    assert (await client.post(f"/facts/{fid}/edit", data={"text": "x", "csrf_token": client.csrf})).status_code == 400
    assert (await client.get("/facts/999999")).status_code == 404
    assert (await client.get("/facts/abc")).status_code == 400

    # Forget: soft delete, not recalled any more.
    r = await client.post(f"/facts/{third.id}/forget", data={"csrf_token": client.csrf})
    assert r.status_code == 303 and (await store.get(third.id)).status == "deleted"
    hits = await store.recall("Anna Lisbon", ["user:alice"], k=10)
    assert all(h.fact.id != third.id for h in hits)
    assert "deleted" in (await client.get(f"/facts/{third.id}")).text
    edit_form = await client.get(f"/facts/{fid}/edit")
    assert "<textarea" in edit_form.text


async def test_purge_user_really_purges(state, store):
    engine = ChatEngine(store)
    try:
        state.engine = engine
        await engine.handle(msg("My passport number is XK4471 and I live in Coimbra"))
        await engine.handle(msg("!remember my locker code is 7731"))
        await engine.handle(msg("Bob here, I like sailing", user="bob"))
        await engine.drain()
        everywhere = [s["id"] for s in await _scopes(store)]
        assert any("7731" in h.fact.content for h in await store.recall("locker code", everywhere, k=20))
        async with client_for(state) as c:
            c.csrf = await login(c)
            # The confirmation must repeat the user id.
            r = await c.post("/users/purge", data={"user": "alice", "confirm": "alic", "csrf_token": c.csrf})
            assert r.status_code == 303
            assert "Not purged" in (await c.get(r.headers["location"])).text
            assert await store.count_facts(["user:alice"]) > 0
            r = await c.post("/users/purge", data={"user": "alice", "confirm": "alice", "csrf_token": c.csrf})
            assert r.status_code == 303
            assert "Purged alice" in (await c.get("/memories")).text
            for q in ("locker code 7731", "passport XK4471", "Coimbra"):
                for mode in ("recall", "text"):
                    listing = await results(c, q=q, status="any", mode=mode)
                    assert "7731" not in listing and "XK4471" not in listing and "Coimbra" not in listing
            sessions = await c.get("/sessions", params={"user": "alice"})
            assert "No sessions" in sessions.text
        everywhere = [s["id"] for s in await _scopes(store)]
        assert "user:alice" not in everywhere
        for q in ("locker code 7731", "passport XK4471", "Coimbra", "alice"):
            for h in await store.recall(q, everywhere, k=50, include_superseded=True):
                assert (
                    "7731" not in h.fact.content and "XK4471" not in h.fact.content and "Coimbra" not in h.fact.content
                )
        assert await store.sessions.list_sessions("alice") == []
        reply = await engine.handle(msg("!recall locker code"))
        assert "7731" not in reply.text
        assert await store.count_facts(["user:bob"]) >= 0  # bob untouched
        assert any("sailing" in (m["content"]) for m in await store.recent_messages("channel:general", 20))
    finally:
        await engine.aclose()


async def _scopes(store):
    from clara.dashboard.service import DashboardService

    return await DashboardService(SimpleNamespace(store=store)).scopes()


# ---------------------------------------------------------------------------------- entities
async def test_entity_page_and_merge(client, store):
    await store.ensure_scope("channel:general", "channel", members=["alice"])
    f1 = await store.add("Bobby fixed the build", "channel:general", entities=[("Bobby", "person")])
    f2 = await store.add("Robert reviewed the release", "channel:general", entities=[("Robert", "person")])
    f3 = await store.add("Robert and Bobby pair on Fridays", "channel:general", entities=["Robert", "Bobby"])
    await store.graph.relate("channel:general", ("Robert", "person"), "works_at", ("Acme", "organisation"))
    await store.graph.relate("channel:general", ("Bobby", "person"), "friend_of", ("Robert", "person"))
    robert = (await store.graph.resolve(["channel:general"], "Robert"))[0]
    bobby = (await store.graph.resolve(["channel:general"], "Bobby"))[0]

    listing = await client.get("/entities", params={"q": "rob"})
    assert "Robert" in listing.text and "Bobby" not in listing.text
    page = await client.get(f"/entities/{robert.id}")
    assert "works_at" in page.text and "reviewed the release" in page.text and "Merge" in page.text

    same = await client.post("/entities/merge", data={"keep": robert.id, "merge": robert.id, "csrf_token": client.csrf})
    assert same.status_code == 400
    r = await client.post("/entities/merge", data={"keep": robert.id, "merge": bobby.id, "csrf_token": client.csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/entities/{robert.id}"
    assert (await store.graph.resolve(["channel:general"], "Bobby"))[0].id == robert.id  # now an alias
    ids = await store.graph.entity_fact_ids(["channel:general"], [robert.id])
    assert set(ids) == {f1, f2, f3}
    rels = await store.graph.relations(["channel:general"], [robert.id])
    assert [r.relation for r in rels] == ["works_at"]  # the Bobby→Robert edge became a self-loop: dropped
    assert (await client.get(f"/entities/{bobby.id}")).status_code == 404
    page = await client.get(f"/entities/{robert.id}")
    assert "fixed the build" in page.text and "bobby" in page.text
    # Across scopes: refused.
    await store.ensure_scope("user:alice", "user", owner="alice")
    await store.add("Alice's cat Tom", "user:alice", entities=[("Tom", "pet")])
    tom = (await store.graph.resolve(["user:alice"], "Tom"))[0]
    r = await client.post("/entities/merge", data={"keep": robert.id, "merge": tom.id, "csrf_token": client.csrf})
    assert r.status_code == 400 and (await store.graph.resolve(["user:alice"], "Tom"))
    # htmx variant answers with a redirect header.
    await store.add("Acme Corp hires", "channel:general", entities=["Acme Corp"])
    acme = (await store.graph.resolve(["channel:general"], "Acme"))[0]
    acme2 = (await store.graph.resolve(["channel:general"], "Acme Corp"))[0]
    r = await client.post(
        "/entities/merge",
        data={"keep": acme.id, "merge": acme2.id},
        headers={"HX-Request": "true", "X-CSRF-Token": client.csrf},
    )
    assert r.status_code == 200 and r.headers["HX-Redirect"] == f"/entities/{acme.id}"


# ---------------------------------------------------------------------------------- other pages
async def test_status_page(state, store):
    await store.ensure_scope("user:alice", "user", owner="alice")
    store.indexer.stop()  # keep one fact unindexed: the vector index lag shows it
    await store.add("unindexed fact", "user:alice")
    guild = SimpleNamespace(
        id=1, name="Test Guild", member_count=3, text_channels=[SimpleNamespace(id=2, name="lobby")]
    )
    state.bot = SimpleNamespace(guilds=[guild], user="Clara#0001", is_ready=lambda: True, latency=0.042)
    async with client_for(state) as c:
        await store.recall("anything", ["user:alice"], k=3)
        logging.getLogger("clara.test").error("something broke <script>x</script>")
        await login(c)
        page = await c.get("/")
        assert page.status_code == 200
        text = page.text
        assert 'id="vector-lag">1 active facts not indexed' in text
        assert "something broke &lt;script&gt;" in text and "<script>x" not in text
        assert "Test Guild" in text and "#lobby" in text and "42 ms" in text
        assert "memory-only" in text and "<svg" in text and "1 recalls in this process" in text
        live = await c.get("/status/live", headers={"HX-Request": "true"})
        assert live.status_code == 200 and "<html" not in live.text and "Queues" in live.text
        csrf = CSRF_RE.search(text).group(1)
        check = await c.post("/status/llm-check", data={"csrf_token": csrf})
        assert check.status_code == 303 and "no LLM configured" in (await c.get("/")).text


async def test_llm_health_check_with_a_provider(state):
    class FakeLLM:
        name = "fake"

        def model_for(self, tier):
            return "fake-model"

        async def complete(self, messages, **kw):
            raise RuntimeError("provider down")

    state.llm = FakeLLM()
    async with client_for(state) as c:
        csrf = await login(c)
        assert "fake-model" in (await c.get("/")).text
        r = await c.post("/status/llm-check", headers={"HX-Request": "true", "X-CSRF-Token": csrf})
        assert r.status_code == 200 and "provider down" in r.text and "bad" in r.text


async def test_sessions_and_recall_timings(state, store):
    engine = ChatEngine(store)
    try:
        state.engine = engine
        async with client_for(state) as c:  # the app instruments store.recall
            await login(c)
            await engine.handle(msg("I am planning a trip to Kyoto in April"))
            await engine.handle(msg("!recall trip"))
            await engine.drain()
            assert len(state.timings.samples) >= 1  # the chat's recalls are timed
            page = await c.get("/sessions")
            assert page.status_code == 200 and "alice" in page.text
            sid = (await store.sessions.list_sessions("alice"))[0].id
            detail = await c.get(f"/sessions/{sid}")
            assert "trip to Kyoto" in detail.text
            assert "No sessions" in (await c.get("/sessions", params={"user": "nobody"})).text
            assert (await c.get("/sessions/99999")).status_code == 404
            assert "p50" in (await c.get("/")).text
    finally:
        await engine.aclose()


async def test_plugin_pages_only_when_loaded(state, store):
    from clara.plugin_host import PluginHost

    async with client_for(state) as c:
        await login(c)
        assert (await c.get("/plugins/invoices")).status_code == 404
    host = PluginHost(store)
    try:
        assert (await host.load("invoices")).ok and (await host.load("reminders")).ok
        state.plugins = host
        async with client_for(state) as c:
            await login(c)
            nav = await c.get("/")
            assert 'href="/plugins/invoices"' in nav.text and 'href="/plugins/reminders"' in nav.text
            for name, title in (("invoices", "Clients"), ("reminders", "Reminders")):
                page = await c.get(f"/plugins/{name}")
                assert page.status_code == 200 and title in page.text and "Empty" in page.text
            assert (await c.get("/plugins/mcp_bridge")).status_code == 404
    finally:
        await host.aclose()


async def test_start_serves_over_tcp(store):
    st = make_state(store)
    server = await start(st, host="127.0.0.1", port=0)
    try:
        assert server.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            assert (await c.get("/healthz")).text == "ok"
            assert (await c.get("/")).status_code == 303
    finally:
        await server.stop()
        st.errors.uninstall()
    assert server.task.done()
