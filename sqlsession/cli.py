"""The ``sqlsession`` command: migrations, alembic's command line, cleanup, inspection.

Exit codes: 0 success, 1 ``get``, ``show`` or ``delete`` found nothing, 2 usage error,
3 any other failure.
Errors are one line on stderr. SQLAlchemy and alembic are imported by the commands
that need them, so ``sqlsession --help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import __version__
from ._dist import DISTRIBUTION
from ._url import (
    ENV_VAR,
    default_database_path,
    describe_table,
    redact_url,
    url_origin,
)
from ._validate import check_identifier, check_key
from .errors import SchemaError, SessionError

if TYPE_CHECKING:
    from .drivers.sql import SQLDriver

__all__ = ["main"]

T = TypeVar("T")
EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_FAILURE = 3


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: ``sys.argv[1:]``).

    Args:
        argv: the arguments after the program name.

    Returns:
        The exit code: 0 success, 1 ``get``, ``show`` or ``delete`` found nothing, 2 usage
        error, 3 any other failure (described in one line on stderr).
    """
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["alembic"]:
        # alembic parses its own arguments (options of its own, -x, subcommands).
        return _guarded("alembic", lambda: _cmd_alembic(given[1:]))
    if given[:1] in (["show"], ["delete"]):
        given = [_cookie_argument(arg) for arg in given]
    parser = _parser()
    try:
        args = parser.parse_args(given)
    except SystemExit as exc:  # --help, --version and usage errors
        return _exit_code(exc)
    command: Callable[[argparse.Namespace], int] = args.run
    if hasattr(args, "url"):
        _announce(args.url, quiet=args.quiet)
    return _guarded(args.command, lambda: command(args))


def _announce(url: str | None, *, quiet: bool) -> None:
    """Say on stderr which database a command uses when no --url named it."""
    origin = url_origin(url)
    if origin == "given" or quiet:
        return
    if origin == "environment":
        note = f"using {redact_url(os.environ[ENV_VAR])} (from {ENV_VAR})"
    else:
        note = f"using sqlite:///{default_database_path()} (no --url and no {ENV_VAR})"
    print(f"sqlsession: {note}", file=sys.stderr, flush=True)


def _guarded(name: str, run: Callable[[], int]) -> int:
    """Run a command; any error becomes one line on stderr and exit code 3."""
    try:
        return run()
    except SessionError as exc:
        return _fail(name, str(exc))
    except KeyboardInterrupt:
        return _fail(name, "interrupted.")
    except Exception as exc:  # an error we did not foresee still gets one line
        return _fail(
            name,
            f"unexpected {type(exc).__name__}: {exc}. Please report this to the sqlsession "
            "issue tracker.",
        )


def _exit_code(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else EXIT_USAGE


# -- the commands --------------------------------------------------------------------


def _cmd_migrate(args: argparse.Namespace) -> int:
    from . import _migrate

    return _move(args, _migrate.upgrade, "Migrated")


def _cmd_downgrade(args: argparse.Namespace) -> int:
    from . import _migrate

    return _move(args, _migrate.downgrade, "Downgraded")


def _move(args: argparse.Namespace, step: Callable[..., None], verb: str) -> int:
    """Run an upgrade or downgrade to ``args.revision`` and say what changed."""
    from . import _migrate

    target = _target(args)
    before = _migrate.current(args.url, **target)
    step(args.url, revision=args.revision, **target)
    after = _migrate.current(args.url, **target)
    if before == after:
        _info(args, f"The session table {_where(args)} is already at migration {_rev(after)}.")
    else:
        _info(
            args, f"{verb} the session table {_where(args)} from {_rev(before)} to {_rev(after)}."
        )
    return EXIT_OK


def _cmd_alembic(argv: list[str]) -> int:
    from . import _alembic_cli

    try:
        invocation = _alembic_cli.parse(argv)
    except SystemExit as exc:  # alembic's --help and usage errors
        return _exit_code(exc)
    _announce(invocation.url, quiet=invocation.quiet)
    _alembic_cli.execute(invocation)
    return EXIT_OK


def _cmd_alembic_ini(args: argparse.Namespace) -> int:
    from . import _migrate

    _say(str(_migrate.alembic_ini()))
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    # Needs no database and no cryptography: a key is 32 random bytes.
    from .web._crypto import generate_encryption_key

    _say(generate_encryption_key())
    return EXIT_OK


def _cmd_cleanup(args: argparse.Namespace) -> int:
    if args.every is None:
        deleted, skipped = _with_driver(args, _cleanup_once)
        _report_cleanup(args, deleted, skipped)
        return EXIT_OK
    try:
        return _with_driver(args, lambda driver: _cleanup_every(args, driver))
    except KeyboardInterrupt:  # where the loop cannot install signal handlers (Windows)
        return EXIT_OK


async def _cleanup_once(driver: SQLDriver) -> tuple[int, bool]:
    deleted = await driver.cleanup()
    return deleted, driver.last_cleanup_skipped


async def _cleanup_every(args: argparse.Namespace, driver: SQLDriver) -> int:
    """Clean up every `args.every` seconds until SIGINT or SIGTERM.

    A failed run is reported on stderr and the loop goes on (the database may be
    restarting), except a `SchemaError`: a missing table will not appear by waiting.
    A signal during a run cancels it; the batch in progress rolls back, and the
    batches already committed stay deleted.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        while not stop.is_set():
            run = asyncio.ensure_future(_cleanup_once(driver))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, SessionError):
                    await run
                break
            try:
                deleted, skipped = run.result()
            except SchemaError:
                raise
            except SessionError as exc:
                _warn(args.command, f"{exc} Trying again in {args.every:g} s.")
            else:
                _report_cleanup(args, deleted, skipped)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.every)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    _info(args, f"Stopped cleaning up the session table {_where(args)}.")
    return EXIT_OK


def _report_cleanup(args: argparse.Namespace, deleted: int, skipped: bool) -> None:
    if skipped:
        _info(
            args,
            f"Another cleanup of the session table {_where(args)} is running; nothing to do here.",
        )
    else:
        noun = "session" if deleted == 1 else "sessions"
        _info(args, f"Deleted {deleted} expired {noun} from {_where(args)}.")


def _cmd_stats(args: argparse.Namespace) -> int:
    from .web import _inspect

    counts = _with_driver(args, _inspect.counts)
    if args.json:
        _say(json.dumps(counts))
    else:
        _say("\n".join(f"{name}: {count}" for name, count in counts.items()))
    return EXIT_OK


def _cmd_get(args: argparse.Namespace) -> int:
    async def get(driver: SQLDriver) -> tuple[bool, Any]:
        value = await driver.get_item(args.key)
        # A stored None reads back as None too; has_item tells it from an absent key.
        found = value is not None or await driver.has_item(args.key)
        return found, value

    found, value = _with_driver(args, get)
    if not found:
        print(f"sqlsession get: no live item {args.key!r} in {_where(args)}.", file=sys.stderr)
        return EXIT_NOT_FOUND
    # ASCII escapes keep the output valid JSON on any terminal encoding.
    _say(json.dumps(value))
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from .web import _inspect

    key = _inspect.session_key(args.cookie)
    info = _with_driver(args, lambda driver: _inspect.read_session(driver, key, now_ms=_now_ms()))
    if info is None:
        _no_session(args)
        return EXIT_NOT_FOUND
    if args.json:
        _say(json.dumps(_inspect.as_json(info, values=args.values)))
    else:
        _say("\n".join(_inspect.show_lines(info, values=args.values)))
    return EXIT_OK


def _cmd_delete(args: argparse.Namespace) -> int:
    from .web import _inspect

    key = _inspect.session_key(args.cookie)

    async def delete(driver: SQLDriver) -> bool:
        if not await driver.has_item(key):
            return False
        await driver.remove_item(key)
        return True

    if not _with_driver(args, delete):
        _no_session(args)
        return EXIT_NOT_FOUND
    _info(args, f"Deleted session {_inspect.session_label(key)} from {_where(args)}.")
    return EXIT_OK


def _no_session(args: argparse.Namespace) -> None:
    # Neither the cookie nor its hash: both would let a reader of the terminal in.
    message = f"no live session for that cookie in {_where(args)}."
    print(f"sqlsession {args.command}: {message}", file=sys.stderr, flush=True)


def _cmd_list(args: argparse.Namespace) -> int:
    from .web import _inspect

    if args.user is not None:
        return _list_user(args)
    listing = _with_driver(
        args,
        lambda driver: _inspect.list_sessions(driver, limit=args.limit, now_ms=_now_ms()),
    )
    if args.json:
        _say(json.dumps([_inspect.as_json(info, keys=False) for info in listing.sessions]))
    elif listing.sessions:
        _say("\n".join(_inspect.table_lines(listing.sessions)))
    if not listing.sessions:
        _note(args, f"no live sessions in {_where(args)}.")
    if listing.truncated:
        _note(
            args,
            f"stopped at --limit {args.limit}; the table holds {listing.total} live sessions.",
        )
    if listing.unreadable:
        _note(args, f"skipped {listing.unreadable} session rows sqlsession cannot read.")
    return EXIT_OK


def _list_user(args: argparse.Namespace) -> int:
    """``list --user``: the user's sessions from their device index (no table scan)."""
    from .web import _inspect, devices

    secret = os.environ.get(args.secret_key_env) or None
    found = _with_driver(
        args, lambda driver: devices.list_user_sessions(driver, args.user, secret_key=secret)
    )[: args.limit]
    if args.json:
        _say(json.dumps([_inspect.device_json(info) for info in found]))
    elif found:
        _say("\n".join(_inspect.device_lines(found)))
    if not found:
        hint = "" if secret else f" (${args.secret_key_env} is not set: is the app's secret_key?)"
        _note(args, f"no live sessions of that user in {_where(args)}{hint}.")
    return EXIT_OK


# -- helpers -------------------------------------------------------------------------


def _now_ms() -> int:
    return round(time.time() * 1000)


def _with_driver(args: argparse.Namespace, work: Callable[[SQLDriver], Awaitable[T]]) -> T:
    """Open the SQL driver for `args`, run `work` with it, and close it."""
    from ._sql_options import SQLOptions
    from .drivers.sql import SQLDriver

    options = SQLOptions(
        url=args.url,
        table=args.table,
        schema=args.schema,
        pool_size=1,
        cleanup_batch_size=getattr(args, "batch_size", None),
    )

    async def run() -> T:
        driver = SQLDriver.from_options(options)
        try:
            return await work(driver)
        finally:
            await driver.dispose()

    return asyncio.run(run())


def _target(args: argparse.Namespace) -> dict[str, Any]:
    return {"table": args.table, "schema": args.schema}


def _where(args: argparse.Namespace) -> str:
    return describe_table(args.url, args.table, args.schema)


def _rev(revision: str | None) -> str:
    return revision if revision is not None else "base (no table)"


def _say(line: str) -> None:
    print(line, flush=True)


def _info(args: argparse.Namespace, line: str) -> None:
    """A message about what was done, on stdout; --quiet leaves it out."""
    if not args.quiet:
        _say(line)


def _note(args: argparse.Namespace, message: str) -> None:
    """A remark beside a command's output, on stderr; --quiet leaves it out."""
    if not args.quiet:
        print(f"sqlsession {args.command}: {message}", file=sys.stderr, flush=True)


def _warn(command: str, message: str) -> None:
    print(f"sqlsession {command}: error: {_one_line(message)}", file=sys.stderr, flush=True)


def _fail(command: str, message: str) -> int:
    _warn(command, message)
    return EXIT_FAILURE


def _one_line(message: str) -> str:
    return " ".join(message.split())


# -- argument parsing ----------------------------------------------------------------


def identifier_arg(what: str) -> Callable[[str], str]:
    """An argparse type that accepts a table or schema name (`what` names the option)."""

    def check(value: str) -> str:
        try:
            return check_identifier(value, what=what)
        except SessionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _key(value: str) -> str:
    try:
        return check_key(value)
    except SessionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cookie_argument(arg: str) -> str:
    """Keep argparse from reading a cookie value that starts with "-" as an option.

    One id in 64 does; ``=VALUE`` (the NAME=VALUE form with no name) is a positional
    argument to argparse, and `_cookie` takes what follows the "=".
    """
    from .web import _ids

    return f"={arg}" if arg.startswith("-") and _ids.is_well_formed(arg) else arg


def _cookie(value: str) -> str:
    from .web import _ids

    # As copied from a browser's cookie list, or as NAME=VALUE from a Cookie header.
    candidate = value.strip().strip('"')
    candidate = candidate.rpartition("=")[2]
    if not _ids.is_well_formed(candidate):
        # The value is not repeated: it may be a real cookie with a typo.
        raise argparse.ArgumentTypeError(
            "must be the session cookie's value: 43 characters of A-Z, a-z, 0-9, _ and - "
            "(or NAME=VALUE)"
        )
    return candidate


def _user(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("must be a non-empty user id")
    return value


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0.001 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0.001, got {value!r}")
    return seconds


def _batch_size(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("database")
    where.add_argument(
        "--url",
        help="database URL, e.g. sqlite:///sessions.db, postgresql://user@host/db or "
        "mysql://user@host/db "
        f"(default: ${ENV_VAR}, else sqlite:///sqlsession.db)",
    )
    where.add_argument(
        "--table",
        default="sqlsession",
        type=identifier_arg("--table"),
        help="session table (default: %(default)s)",
    )
    where.add_argument(
        "--schema",
        type=identifier_arg("--schema"),
        help="PostgreSQL schema of the table (default: the search path)",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only errors and the requested data (no progress messages, no notes)",
    )

    parser = argparse.ArgumentParser(
        prog="sqlsession",
        description="Manage a sqlsession table: migrations, cleanup of expired sessions, "
        "inspection.",
        epilog="Exit codes: 0 success, 1 get, show or delete found nothing, 2 usage error, "
        "3 other failure.",
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser(
        "migrate",
        parents=[common],
        help="create the session table or bring it up to date",
        description="Create the session table, or migrate it up to REVISION. Each table "
        "keeps its own alembic version table, <table>_alembic_version.",
    )
    migrate.add_argument("revision", nargs="?", default="head", metavar="REVISION")
    migrate.set_defaults(run=_cmd_migrate)

    downgrade = commands.add_parser(
        "downgrade",
        parents=[common],
        help="migrate the session table down ('base' drops it)",
        description="Migrate the session table down to REVISION; 'base' drops the table, "
        "every session in it, and its version table.",
    )
    downgrade.add_argument("revision", metavar="REVISION")
    downgrade.set_defaults(run=_cmd_downgrade)

    cleanup = commands.add_parser(
        "cleanup",
        parents=[common],
        help="delete expired sessions",
        description="Delete expired sessions once (for cron or a Kubernetes CronJob), or "
        "every SECONDS until SIGINT or SIGTERM. On PostgreSQL and MySQL one cleanup runs "
        "at a time; the others report that and exit 0.",
    )
    cleanup.add_argument(
        "--every", type=_seconds, metavar="SECONDS", help="run again every SECONDS seconds"
    )
    cleanup.add_argument(
        "--batch-size",
        type=_batch_size,
        default=None,
        metavar="N",
        help="rows deleted per statement (default: 5000 on PostgreSQL and MySQL, 500 on SQLite)",
    )
    cleanup.set_defaults(run=_cmd_cleanup)

    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="count sessions, users and expired rows",
        description="Count live web sessions, live user rows (one per user bound with "
        "bind_user), every live row, and expired rows awaiting cleanup.",
    )
    stats.add_argument(
        "--json",
        action="store_true",
        help='print {"sessions": N, "users": U, "live": L, "expired": E}',
    )
    stats.set_defaults(run=_cmd_stats)

    show = commands.add_parser(
        "show",
        parents=[common],
        help="show the session a cookie names",
        description="Show the web session a session cookie names: when it was created, "
        "last seen and expires, its bound user (as a label) and its keys. Neither the "
        "cookie nor its hash is printed; values only with --values. Exit 1 when there is "
        "no live session for the cookie.",
    )
    show.add_argument(
        "cookie", type=_cookie, metavar="COOKIE_VALUE", help="the session cookie's value"
    )
    show.add_argument("--values", action="store_true", help="print the keys' values too")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(run=_cmd_show)

    delete = commands.add_parser(
        "delete",
        parents=[common],
        help="delete the session a cookie names",
        description="Delete the web session a session cookie names (the visitor gets a "
        "new, empty session). Exit 1 when there is no live session for the cookie.",
    )
    delete.add_argument(
        "cookie", type=_cookie, metavar="COOKIE_VALUE", help="the session cookie's value"
    )
    delete.set_defaults(run=_cmd_delete)

    list_ = commands.add_parser(
        "list",
        parents=[common],
        help="list sessions, one line each",
        description="List web sessions, newest activity first: a label (not an id), "
        "created, last seen, expiry and the bound user's label, in UTC. Reads at most "
        "--limit sessions; which ones is arbitrary (they are stored under hashes). With "
        "--user, the sessions of that user from their device index: the device label "
        "(for end_user_session), created, last seen, and the client when the app records "
        "it (record_client).",
    )
    list_.add_argument(
        "--user",
        type=_user,
        metavar="USER",
        help="the sessions of this user id (bind_user), with their device labels",
    )
    list_.add_argument(
        "--secret-key-env",
        default="SQLSESSION_SECRET_KEY",
        metavar="VAR",
        help="the environment variable holding the app's secret_key, with which user ids "
        "are hashed (default: %(default)s; unset: the app has none)",
    )
    list_.add_argument(
        "--limit",
        type=_batch_size,
        default=100,
        metavar="N",
        help="read at most N sessions (default: %(default)s)",
    )
    list_.add_argument("--json", action="store_true", help="print a JSON array")
    list_.set_defaults(run=_cmd_list)

    get = commands.add_parser(
        "get",
        parents=[common],
        help="print the value stored under a raw driver KEY as JSON",
        description="Print the value stored under the driver key KEY as JSON (null for a "
        "stored None); exit 1 when there is no live item. KEY is the raw storage key: a "
        "web session is stored under s: and the SHA-256 of its cookie, so use "
        "'sqlsession show COOKIE_VALUE' for those.",
    )
    get.add_argument("key", type=_key, metavar="KEY")
    get.set_defaults(run=_cmd_get)

    # Listed for --help only: main() hands "alembic ..." to alembic's own parser.
    commands.add_parser(
        "alembic",
        add_help=False,
        help="alembic's own command line on sqlsession's migrations "
        "(sqlsession alembic upgrade head, current, history, downgrade base, check; "
        "see sqlsession alembic --help)",
    )
    alembic_ini = commands.add_parser(
        "alembic-ini",
        help="print the path of sqlsession's alembic.ini, for alembic -c PATH",
        description="Print the path of the alembic.ini that runs sqlsession's migrations: "
        'alembic -c "$(sqlsession alembic-ini)" -x url=... upgrade head',
    )
    alembic_ini.set_defaults(run=_cmd_alembic_ini)
    keygen = commands.add_parser(
        "keygen",
        help="print a new key for encryption_keys",
        description="Print a new encryption key (32 random bytes, urlsafe base64) for the "
        "session layer's encryption_keys. Keep it where the app reads its secrets; put a "
        "new key first in the list to rotate, and keep the old ones until their sessions "
        "have expired.",
    )
    keygen.set_defaults(run=_cmd_keygen)
    return parser
