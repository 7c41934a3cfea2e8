"""The session layer answers 503 when the database is unavailable or too slow, else 500."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sqlsession.drivers.sql import SQLDriver

from . import pgcluster
from .test_asgi import client, make_app
from .test_timeouts import lock_table


async def test_an_unreachable_database_is_a_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nobody = pgcluster.free_port(pgcluster.CLUSTER_PORTS)
    async with SQLDriver(f"postgresql://u@127.0.0.1:{nobody}/app") as driver:
        app = make_app(driver)
        async with client(app) as http:
            with caplog.at_level(logging.ERROR, logger="sqlsession"):
                response = await asyncio.wait_for(http.post("/put/a", json=1), 10)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.text == "Service Unavailable"
    assert "answering 503" in caplog.text


@pytest.mark.postgres
async def test_a_statement_timeout_is_a_503_and_saves_nothing(postgres_url: str) -> None:
    async with SQLDriver(postgres_url, statement_timeout=0.3) as driver:
        app = make_app(driver)
        async with client(app) as http:
            await http.post("/put/a", json=1)  # a session, so the next save writes
            holder = await lock_table(postgres_url)
            try:
                response = await asyncio.wait_for(http.post("/put/b", json=2), 10)
            finally:
                await holder.close()
            assert response.status_code == 503
            assert response.headers.get_list("set-cookie") == []
            assert (await http.get("/")).json() == {"a": 1}


async def test_other_driver_failures_stay_500(tmp_path: object) -> None:
    # A SQLite file that is not there is a SchemaError: waiting will not help.
    driver = SQLDriver(f"sqlite:///{tmp_path}/missing.db")
    async with driver, client(make_app(driver)) as http:
        response = await http.post("/put/a", json=1)
    assert response.status_code == 500
