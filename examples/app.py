"""A Starlette app with server-side sessions: sign in, a counter, a cart, your devices.

Run it from a clone (it stores sessions in ``sqlsession.db`` in the working directory, or
wherever ``SQLSESSION_URL`` points)::

    .venv/bin/sqlsession migrate
    .venv/bin/python examples/app.py            # then open http://127.0.0.1:8000/

``--port 0`` picks a free port; the address to open is printed either way.
"""

from __future__ import annotations

import argparse
import html
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sqlsession import SessionError, SessionTooLargeError, session_drivers
from sqlsession.web import (
    DEFAULT_MAX_AGE,
    Clock,
    DeviceSession,
    SessionMiddleware,
    get_session,
)

# What one visitor may store: every field a form sends ends up in the session, so each
# is capped here, and the session as a whole by the middleware's max_size.
MAX_FIELD = 200
MAX_CART = 50
MAX_SESSION_BYTES = 16 * 1024


async def form(request: Request) -> dict[str, str]:
    # Urlencoded forms parsed by hand, so the example needs no python-multipart.
    fields = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True)
    return {name: values[0].strip() for name, values in fields.items()}


def back_home() -> Response:
    return RedirectResponse("/", status_code=303)


def too_large(what: str) -> Response:
    return HTMLResponse(what, status_code=413)


async def session_too_large(request: Request, exc: Exception) -> Response:
    # Whatever slips past the caps above: an assignment that would make the session
    # larger than max_size raises SessionTooLargeError, and nothing was stored.
    return too_large("That is more than this session can hold.")


def device_item(device: DeviceSession) -> str:
    seen = device.last_seen_at.strftime("%Y-%m-%d %H:%M UTC")
    where = " · ".join(
        html.escape(part) for part in (device.user_agent, device.client_address) if part
    )
    if device.current:
        action = "<b>this device</b>"
    else:
        # The label names the session to its own user only: it is not a session id.
        action = f"""<form class="end-device" method="post" action="/devices/end">
          <input type="hidden" name="label" value="{html.escape(device.label)}">
          <button>Sign out</button></form>"""
    return f'<li data-label="{html.escape(device.label)}">{where or "?"} · {seen} {action}</li>'


async def devices_panel(request: Request) -> str:
    listed = await get_session(request).user_sessions()
    items = "".join(device_item(device) for device in listed)
    return f"""
        <h2>Your devices</h2>
        <ul id="devices">{items}</ul>
        <form id="signout-others" method="post" action="/devices/signout-others">
          <button>Sign out other devices</button>
        </form>"""


async def home(request: Request) -> Response:
    session = request.session  # exactly as with Starlette's own SessionMiddleware
    user = session.get("user")
    cart = session.get("cart", [])
    items = "".join(f"<li>{html.escape(str(item))}</li>" for item in cart)
    if user is None:
        account = """
        <form id="signin" method="post" action="/signin">
          <label>Name <input name="name" required></label>
          <label><input type="checkbox" name="shared" value="1"> Shared computer: forget
            me when the browser closes</label>
          <button>Sign in</button>
        </form>"""
    else:
        account = f"""
        <p id="user">Signed in as <b>{html.escape(user)}</b></p>
        <form id="signout" method="post" action="/signout"><button>Sign out</button></form>
        <form id="signout-everywhere" method="post" action="/signout-everywhere">
          <button>Sign out everywhere</button>
        </form>{await devices_panel(request)}"""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sqlsession example</title></head>
<body>
  <h1>sqlsession example</h1>
  {account}
  <h2>Counter: <span id="count">{session.get("count", 0)}</span></h2>
  <form id="counter" method="post" action="/counter"><button>+1</button></form>
  <h2>Cart (<span id="cart-size">{len(cart)}</span>)</h2>
  <ul id="cart">{items}</ul>
  <form id="add" method="post" action="/cart">
    <input name="item" required> <button>Add to cart</button>
  </form>
</body></html>"""
    return HTMLResponse(page)


async def state(request: Request) -> Response:
    """The session as JSON, for scripts and tests."""
    return JSONResponse(dict(request.session))


async def sign_in(request: Request) -> Response:
    fields = await form(request)
    name = fields.get("name", "")
    if not name:
        return HTMLResponse("A name is required.", status_code=400)
    if len(name) > MAX_FIELD:
        return too_large(f"A name is at most {MAX_FIELD} characters.")
    session = get_session(request)
    # bind_user also gives the session a new id: one planted before sign-in is worthless.
    session.bind_user(name)
    session["user"] = name
    if fields.get("shared"):
        # A cookie without Max-Age: the browser drops it when it closes. The session
        # itself still ends at max_age (or idle_timeout) on the server.
        session.set_max_age(0)
    return back_home()


async def count(request: Request) -> Response:
    request.session["count"] = request.session.get("count", 0) + 1
    return back_home()


async def add_to_cart(request: Request) -> Response:
    item = (await form(request)).get("item", "")
    if len(item) > MAX_FIELD:
        return too_large(f"An item is at most {MAX_FIELD} characters.")
    if item:
        cart = request.session.setdefault("cart", [])
        if len(cart) >= MAX_CART:
            return too_large(f"The cart holds at most {MAX_CART} items.")
        cart.append(item)  # changed in place: saved at the end of the request
    return back_home()


async def sign_out(request: Request) -> Response:
    get_session(request).destroy()
    return back_home()


async def sign_out_everywhere(request: Request) -> Response:
    session = get_session(request)
    if "user" not in session:
        return back_home()
    session.sign_out_everywhere()
    return back_home()


async def end_device(request: Request) -> Response:
    session = get_session(request)
    if "user" in session:
        try:
            await session.end_session((await form(request)).get("label", ""))
        except SessionError:  # not a label, or this device's own (Sign out does that)
            return HTMLResponse("That is not another device of this list.", status_code=400)
    return back_home()


async def sign_out_other_devices(request: Request) -> Response:
    session = get_session(request)
    if "user" in session:
        await session.sign_out_other_devices()
    return back_home()


routes = [
    Route("/", home),
    Route("/state", state),
    Route("/signin", sign_in, methods=["POST"]),
    Route("/counter", count, methods=["POST"]),
    Route("/cart", add_to_cart, methods=["POST"]),
    Route("/signout", sign_out, methods=["POST"]),
    Route("/signout-everywhere", sign_out_everywhere, methods=["POST"]),
    Route("/devices/end", end_device, methods=["POST"]),
    Route("/devices/signout-others", sign_out_other_devices, methods=["POST"]),
]


def create_app(
    driver: Any = None,
    *,
    https_only: bool = False,
    max_age: float | None = DEFAULT_MAX_AGE,
    idle_timeout: float | None = 30 * 60,
    clock: Clock | None = None,
    middleware: Sequence[Middleware] = (),
    record_client: bool = True,
) -> Starlette:
    """Build the example app.

    Args:
        driver: a driver or its config; default: the SQL driver on ``$SQLSESSION_URL``,
            else ``sqlite:///sqlsession.db``.
        https_only: mark the cookie ``Secure``. False here because this example serves
            plain http on 127.0.0.1; behind TLS, keep the middleware's default (True).
        max_age: absolute session lifetime in seconds.
        idle_timeout: seconds without a request after which the session ends.
        clock: seconds since the epoch, for tests that move time.
        middleware: more middleware, run inside the session middleware (it can use the
            session).
        record_client: show each device's browser and network in "Your devices".

    Returns:
        The Starlette app.
    """
    session_middleware = Middleware(
        SessionMiddleware,
        driver=driver if driver is not None else session_drivers.sql(),
        https_only=https_only,
        max_age=max_age,
        idle_timeout=idle_timeout,
        max_size=MAX_SESSION_BYTES,
        record_client=record_client,
        clock=clock,
    )
    return Starlette(
        routes=routes,
        middleware=[session_middleware, *middleware],
        exception_handlers={SessionTooLargeError: session_too_large},
    )


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` with uvicorn, printing the address to open (``port=0``: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    print(f"Open http://{host}:{sock.getsockname()[1]}/ (Ctrl+C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the example app (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    serve(create_app(), args.host, args.port)


if __name__ == "__main__":
    main()
