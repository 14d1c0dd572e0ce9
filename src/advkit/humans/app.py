"""The local web study (``advkit humans serve RUN_DIR``): a Starlette app over a finished JSMA run's examples.

Papernot et al., "The Limitations of Deep Learning in Adversarial Settings" (EuroS&P 2016), Section V-C, asked
people "is this a numeric digit?" and "which digit is it?" about adversarial samples; this app asks them in a
browser: consent, instructions, one item at a time, done. Routes and ids follow issue 28's shared contract.

Safe by default: it listens on 127.0.0.1 (another host needs a token, which also guards ``/export``); every POST
carries a double-submit CSRF token (cookie ``advkit_csrf`` == form field ``csrf``, compared with
:func:`secrets.compare_digest`); items are addressed by id only and every input is validated (400 otherwise); each
response has a Content-Security-Policy that allows only this origin's images and the pages' own inline style and
script (by hash), ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``. Database work runs in Starlette's
threadpool with one SQLite connection per request (:mod:`advkit.humans.store`).
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advkit.humans import missing_extra, pages, store
from advkit.humans.items import choose_items, open_study

try:
    import python_multipart  # noqa: F401  (Starlette's form parser)
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ModuleNotFoundError as e:  # pragma: no cover - depends on the install
    raise missing_extra(e.name) from e

__all__ = ["CSRF_COOKIE", "LOOPBACK", "PARTICIPANT_COOKIE", "create_app", "serve"]

CSRF_COOKIE = "advkit_csrf"
PARTICIPANT_COOKIE = "advkit_participant"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE_DAYS = 30
HEADERS = [(b"content-security-policy", pages.CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"cache-control", b"no-store")]


class SecurityHeaders:
    """ASGI middleware: adds :data:`HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {h[0] for h in HEADERS}
                message["headers"] = [h for h in message.get("headers", []) if h[0] not in names] + HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cookie(response: Response, key: str, value: str) -> None:
    response.set_cookie(key, value, max_age=COOKIE_DAYS * 86400, httponly=True, samesite="strict", path="/")


def create_app(run_dir: str | Path, *, token: str | None = None, items_per_participant: int = 40,
               attention_checks: int = 3, seed: int = 0) -> Starlette:
    """The study's Starlette app over a finished JSMA run (its items built once into ``RUN_DIR/humans.sqlite``).

    Args:
        run_dir: a finished ``advkit reproduce jsma`` run folder.
        token: the secret that ``/export`` requires (``Authorization: Bearer TOKEN`` or ``?token=``); without one,
            ``/export`` is always 403.
        items_per_participant: items each participant answers (attention checks and ~20% controls included).
        attention_checks: attention items per participant.
        seed: seeds the item choice and every participant's order.

    Raises:
        ValueError: not a finished JSMA run, or an existing study made with other settings.
    """
    stored = open_study(run_dir, items_per_participant, attention_checks, seed)
    settings = stored["settings"]
    db = Path(run_dir) / store.DB_NAME
    n_classes = len(settings["classes"])

    def with_db(fn: Callable[..., Any], *args: Any) -> Any:
        conn = store.connect(db)
        try:
            return fn(conn, *args)
        finally:
            conn.close()

    async def db_call(fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(with_db, fn, *args)

    async def participant(request: Request) -> str | None:
        pid = request.cookies.get(PARTICIPANT_COOKIE)
        return pid if pid and len(pid) < 100 and await db_call(store.participant_exists, pid) else None

    def csrf_of(request: Request) -> tuple[str, bool]:
        value = request.cookies.get(CSRF_COOKIE)
        return (value, False) if value and len(value) < 100 else (secrets.token_urlsafe(32), True)

    def html(request: Request, page: Callable[[str], str]) -> HTMLResponse:
        """``page(csrf)`` with the same CSRF token as the cookie (set here when the request has none)."""
        value, new = csrf_of(request)
        response = HTMLResponse(page(value))
        if new:
            _cookie(response, CSRF_COOKIE, value)
        return response

    async def checked_form(request: Request) -> dict[str, str] | Response:
        try:
            form = await request.form(max_files=0, max_fields=20)
        except Exception:  # a malformed body (bad multipart, too many fields)
            return HTMLResponse(pages.error_page("The form could not be read."), status_code=400)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        sent = fields.get("csrf", "")
        if not cookie or not secrets.compare_digest(cookie.encode(), sent.encode()):
            return HTMLResponse(pages.error_page("The form expired or did not come from this study's page: go back "
                                                 "and try again."), status_code=403)
        return fields

    async def home(request: Request) -> Response:
        if await participant(request):
            return RedirectResponse("/item", status_code=303)
        return html(request, lambda csrf: pages.consent_page(csrf, settings))

    async def consent(request: Request) -> Response:
        fields = await checked_form(request)
        if isinstance(fields, Response):
            return fields
        if await participant(request):
            return RedirectResponse("/item", status_code=303)
        pid = await db_call(store.create_participant, lambda conn, n: choose_items(conn, n, settings))
        response = RedirectResponse("/instructions", status_code=303)
        _cookie(response, PARTICIPANT_COOKIE, pid)
        return response

    async def instructions(request: Request) -> Response:
        return html(request, lambda _: pages.instructions_page(settings))

    def item_state(conn: Any, pid: str) -> tuple[int | None, int, int]:
        item = store.next_item(conn, pid)
        return (item, *store.progress(conn, pid))

    async def item(request: Request) -> Response:
        pid = await participant(request)
        if pid is None:
            return RedirectResponse("/", status_code=303)
        current, answered, total = await db_call(item_state, pid)
        if current is None:
            return RedirectResponse("/done", status_code=303)
        return html(request, lambda csrf: pages.item_page(current, answered, total, csrf, settings))

    async def answer(request: Request) -> Response:
        fields = await checked_form(request)
        if isinstance(fields, Response):
            return fields
        pid = await participant(request)
        if pid is None:
            return RedirectResponse("/", status_code=303)
        values = {}
        for name, allowed in (("item", None), ("is_digit", range(2)), ("label", range(n_classes))):
            raw = fields.get(name, "")
            if not (raw.isascii() and raw.isdigit() and len(raw) < 10) or (allowed and int(raw) not in allowed):
                what = {"item": "the item", "is_digit": "yes or no", "label": "a class"}[name]
                return HTMLResponse(pages.error_page(f"Please choose {what} ({name} = {raw[:20]!r} is not valid)."),
                                    status_code=400)
            values[name] = int(raw)
        outcome = await db_call(store.record_answer, pid, values["item"], values["is_digit"], values["label"])
        if outcome == "unassigned":
            return HTMLResponse(pages.error_page("That image is not one of yours."), status_code=400)
        return RedirectResponse("/item", status_code=303)

    async def image(request: Request) -> Response:
        pid = await participant(request)
        png = None if pid is None else await db_call(store.item_png, pid, int(request.path_params["id"]))
        if png is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(png, media_type="image/png")

    async def done(request: Request) -> Response:
        return HTMLResponse(pages.done_page())

    async def export(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        sent = header[7:] if header.startswith("Bearer ") else request.query_params.get("token", "")
        if not token or not secrets.compare_digest(token.encode(), sent.encode()):
            return Response("forbidden: give the study's token (Authorization: Bearer TOKEN or ?token=)",
                            status_code=403, media_type="text/plain")
        rows = await db_call(store.export_rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(store.EXPORT_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return Response(buf.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="humans.csv"'})

    routes = [Route("/", home), Route("/consent", consent, methods=["POST"]), Route("/instructions", instructions),
              Route("/item", item), Route("/answer", answer, methods=["POST"]), Route("/image/{id:int}", image),
              Route("/done", done), Route("/export", export)]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.settings = settings
    app.state.db = db
    return app


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None, *,
          items_per_participant: int = 40, attention_checks: int = 3, seed: int = 0,
          announce: Callable[[str], None] = print) -> None:
    """Serve the study with uvicorn until interrupted.

    Raises:
        ValueError: a host other than 127.0.0.1 / localhost / ::1 without a token (``--token``), or what
            :func:`create_app` raises.
    """
    if host not in LOOPBACK and not token:
        raise ValueError(f"listening on {host} makes the study reachable from other machines: give a secret with "
                         f"--token (it also guards /export), or use --host 127.0.0.1")
    try:
        import uvicorn
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the install
        raise missing_extra(e.name) from e

    app = create_app(run_dir, token=token, items_per_participant=items_per_participant,
                     attention_checks=attention_checks, seed=seed)
    shown = f"[{host}]" if ":" in host else host
    announce(f"study: http://{shown}:{port}/  (answers: {app.state.db}; Ctrl-C stops, answers are kept)")
    if token:
        announce(f"export: http://{shown}:{port}/export?token=...  (or Authorization: Bearer TOKEN)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
