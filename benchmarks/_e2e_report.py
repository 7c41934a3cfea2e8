"""The figures of e2e.py: cells summed over rounds, markdown tables ready for the README."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Row order and labels of the tables; the first column of every table.
LABELS = {
    "none": "no session middleware",
    "cookie": "Starlette's cookie SessionMiddleware",
    "starsessions-redis": "starsessions + Redis",
    "starsessions-memory": "starsessions, in memory",
    "litestar-redis": "Litestar + Redis",
    "sqlsession-postgres": "**sqlsession PostgreSQL**",
    "sqlsession-mariadb": "**sqlsession MariaDB**",
    "sqlsession-sqlite": "**sqlsession SQLite**",
    "sqlsession-memory": "sqlsession memory",
}
ROUTE_LABELS = {
    "read": "read (session unchanged)",
    "write": "write (cart + counter), 16 sessions",
    "write-one": "write, one session from 16 connections",
    "plain": "page not using the session",
}
BASELINE = "starsessions-redis"
# sqlsession's memory driver is measured against starsessions' memory store instead.
BASELINES = {"sqlsession-memory": "starsessions-memory", "starsessions-memory": None}
DB_IN_APP = {"sqlsession-sqlite", "sqlsession-memory", "starsessions-memory"}


@dataclass
class Cell:
    """One contender on one route, summed over the rounds."""

    requests: int = 0
    seconds: float = 0.0
    app_cpu: float = 0.0  # seconds
    db_cpu: float = 0.0
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    landed: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def per_request_ms(self, cpu: float) -> float:
        return cpu * 1000 / self.requests if self.requests else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "req_per_s": round(self.rate, 1),
            # Percentiles are per round; the mean of the rounds' figures is reported.
            "p50_ms": round(_mean(self.p50_ms), 3),
            "p99_ms": round(_mean(self.p99_ms), 3),
            "app_cpu_ms_per_req": round(self.per_request_ms(self.app_cpu), 4),
            "db_cpu_ms_per_req": round(self.per_request_ms(self.db_cpu), 4),
            "writes_landed": round(min(self.landed), 3) if self.landed else None,
            "failures": self.failures,
        }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _baseline(contender: str) -> str | None:
    found = BASELINES.get(contender, BASELINE)
    return None if found == contender else found


def _rate_cell(cells: dict[str, dict[str, Cell]], contender: str, route: str) -> str:
    cell = cells[contender][route]
    if cell.failures:
        return "failed"
    text = f"{cell.rate:,.0f}"
    base = _baseline(contender)
    if base and base in cells and not cells[base][route].failures and cells[base][route].rate:
        text += f" ({cell.rate / cells[base][route].rate:.2f}x)"
    return text


def _latency_cell(cell: Cell) -> str:
    return f"{_mean(cell.p50_ms):.1f} / {_mean(cell.p99_ms):.1f}"


def _cpu_cell(contender: str, cell: Cell) -> str:
    app = f"{cell.per_request_ms(cell.app_cpu):.2f}"
    if contender in DB_IN_APP or contender in ("none", "cookie"):
        return app
    return f"{app} + {cell.per_request_ms(cell.db_cpu):.2f}"


def _table(header: str, routes: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    lines = [
        "| " + " | ".join([header, *(ROUTE_LABELS[r] for r in routes)]) + " |",
        "|---" * (len(routes) + 1) + "|",
    ]
    lines += ["| " + " | ".join([LABELS[name], *values]) + " |" for name, values in rows]
    return lines


def markdown(cells: dict[str, dict[str, Cell]], routes: list[str]) -> str:
    """Three tables: req/s with ratios, p50 / p99, CPU per request (app + database)."""
    order = [name for name in LABELS if name in cells]
    rates = [(n, [_rate_cell(cells, n, r) for r in routes]) for n in order]
    latency = [(n, [_latency_cell(cells[n][r]) for r in routes]) for n in order]
    cpu = [(n, [_cpu_cell(n, cells[n][r]) for r in routes]) for n in order]
    parts = [
        *_table("req/s", routes, rates),
        "",
        *_table("p50 / p99 latency, ms", routes, latency),
        "",
        *_table("CPU ms per request: app + database", routes, cpu),
        "",
        "CPU per request: the uvicorn process's, plus the database's (PostgreSQL: the "
        "backends serving the app; MariaDB and Redis: the whole server process, other "
        "clients of a shared server included); SQLite and the memory stores run in the app.",
    ]
    return "\n".join(parts)
