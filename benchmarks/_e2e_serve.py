"""Serve one contender's app with uvicorn, as e2e.py starts it (one process per contender).

    python benchmarks/_e2e_serve.py CONTENDER --port 8123 [--sql-url URL --table NAME]
        [--redis-url redis://127.0.0.1:6379/13 --redis-prefix e2e-bench:]

One worker (uvicorn's in-process server), no access log, uvicorn's default loop and HTTP
parser (uvloop and httptools when installed, as with ``uvicorn[standard]``).
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from _e2e_app import STARLETTE_CONTENDERS, Target, build_app

CONTENDERS = (*STARLETTE_CONTENDERS, "litestar-redis")


def app_for(contender: str, target: Target) -> Any:
    if contender == "litestar-redis":
        from _e2e_litestar import build_app as build_litestar

        return build_litestar(target)
    return build_app(contender, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sql-url")
    parser.add_argument("--table", default="sqlsession")
    parser.add_argument("--redis-url", default=Target.redis_url)
    parser.add_argument("--redis-prefix", default=Target.redis_prefix)
    args = parser.parse_args()
    target = Target(args.sql_url, args.table, args.redis_url, args.redis_prefix)
    uvicorn.run(
        app_for(args.contender, target),
        host="127.0.0.1",
        port=args.port,
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
