"""`SessionMiddleware` in a FastAPI app, with the session as a typed dependency, on every driver."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request

from sqlsession.web import Session, SessionMiddleware, get_session
from tests.conftest import FakeClock


def current_session(request: Request) -> Session:
    return get_session(request)


CurrentSession = Annotated[Session, Depends(current_session)]


def make_app(driver: Any, clock: FakeClock) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, driver=driver, clock=clock)

    @app.post("/sign-in/{user}")
    async def sign_in(user: str, session: CurrentSession) -> dict[str, str]:
        session.bind_user(user)
        session["user"] = user
        return {"user": user}

    @app.post("/cart/{item}")
    async def add(item: str, session: CurrentSession) -> dict[str, list[str]]:
        if "user" not in session:
            raise HTTPException(status_code=401, detail="sign in first")
        session["cart"] = [*session.get("cart", []), item]
        return {"cart": session["cart"]}

    @app.get("/cart")
    async def cart(request: Request) -> dict[str, Any]:
        # Plain Starlette access works in FastAPI too.
        return {"cart": request.session.get("cart", [])}

    @app.post("/sign-out")
    async def sign_out(session: CurrentSession) -> None:
        session.destroy()

    return app


async def test_fastapi_sign_in_cart_and_sign_out(driver: Any, clock: FakeClock) -> None:
    transport = httpx.ASGITransport(app=make_app(driver, clock))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        refused = await http.post("/cart/tea")
        assert refused.status_code == 401
        assert "set-cookie" not in refused.headers  # nothing was stored for the refusal

        await http.post("/sign-in/ada")
        first = http.cookies["__Host-session"]
        assert (await http.post("/cart/tea")).json() == {"cart": ["tea"]}
        assert (await http.post("/cart/milk")).json() == {"cart": ["tea", "milk"]}
        assert (await http.get("/cart")).json() == {"cart": ["tea", "milk"]}

        # Signing in again regenerates the id; the data follows, the old id is dead.
        await http.post("/sign-in/ada")
        assert http.cookies["__Host-session"] != first
        assert (await http.get("/cart")).json() == {"cart": ["tea", "milk"]}
        async with httpx.AsyncClient(
            transport=transport, base_url="https://testserver", cookies={"__Host-session": first}
        ) as replay:
            assert (await replay.get("/cart")).json() == {"cart": []}

        http.cookies.clear()
        await http.post("/sign-in/bob")
        await http.post("/cart/bread")
        response = await http.post("/sign-out")
        assert response.status_code == 200
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert "__Host-session" not in http.cookies
        assert (await http.get("/cart")).json() == {"cart": []}
