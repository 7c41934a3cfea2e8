"""``sqlsession alembic ARGS...``: alembic's own command line on sqlsession's migrations.

Whatever ``alembic`` takes works (``upgrade head``, ``current``, ``history``,
``downgrade base``, ``check``, ``--sql``, ``-x``), run with the package's scripts and
alembic.ini instead of files of the user's, plus sqlsession's ``--url``, ``--table`` and
``--schema``, before or after the alembic command. Refused: the commands that would
write into the package's migration history (``revision``, ``merge``, ``edit``,
``init``), and ``-c``/``-n``, which would pick another configuration.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

from alembic.config import CommandLine, Config
from alembic.util import CommandError

from . import _migrate
from ._url import ENV_VAR, describe_table, resolve_url
from .cli import identifier_arg
from .drivers.sql._errors import first_line
from .errors import ConfigError, SessionError

__all__ = ["PROG", "Invocation", "execute", "parse"]

PROG = "sqlsession alembic"
DEFAULT_TABLE = "sqlsession"
# alembic commands that create or edit migration scripts: here those would be the files
# of the installed package (or, for init, a second environment nobody asked for).
_REFUSED = frozenset({"init", "revision", "merge", "edit"})


@dataclass(frozen=True)
class Invocation:
    """A parsed ``sqlsession alembic`` command line, ready to run."""

    command_line: CommandLine
    options: argparse.Namespace
    url: str | None
    """The URL given with ``--url`` or ``-x url=`` (None: ``$SQLSESSION_URL`` or the default)."""
    table: str
    schema: str | None

    @property
    def command(self) -> str:
        """The alembic command's name (``upgrade``, ``check``, ...)."""
        name: str = self.options.cmd[0].__name__
        return name

    @property
    def quiet(self) -> bool:
        """Whether alembic's ``-q`` was given."""
        return bool(self.options.quiet)


def _add_own_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the subcommands too, so they may follow the alembic command as with every other
    # sqlsession command; SUPPRESS there keeps a subcommand's default from overwriting
    # what was given before it.
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("sqlsession") if top else parser
    group.add_argument(
        "--url",
        dest="sqlsession_url",
        metavar="URL",
        default=default,
        help=f"database URL (default: ${ENV_VAR}, else sqlite:///sqlsession.db)",
    )
    group.add_argument(
        "--table",
        dest="sqlsession_table",
        metavar="TABLE",
        type=identifier_arg("--table"),
        default=default,
        help=f"session table (default: {DEFAULT_TABLE})",
    )
    group.add_argument(
        "--schema",
        dest="sqlsession_schema",
        metavar="SCHEMA",
        type=identifier_arg("--schema"),
        default=default,
        help="PostgreSQL schema of the table (default: the search path)",
    )


def _x_options(options: argparse.Namespace) -> dict[str, str]:
    pairs = (item.partition("=") for item in options.x or ())
    return {name: value for name, sep, value in pairs if sep}


def _once(parser: argparse.ArgumentParser, name: str, given: str | None, x: dict[str, str]) -> None:
    if given is not None and name in x:
        parser.error(f"give the {name} once: --{name} or -x {name}=, not both")


def parse(argv: list[str]) -> Invocation:
    """Parse the arguments after ``sqlsession alembic``.

    Args:
        argv: alembic's arguments, with sqlsession's ``--url``, ``--table``, ``--schema``.

    Returns:
        What to run.

    Raises:
        SystemExit: as argparse does: 0 after ``--help``, 2 for a usage error (with the
            usage and one line of error on stderr).
    """
    command_line = CommandLine(prog=PROG)
    parser = command_line.parser
    parser.description = (
        "alembic's command line on sqlsession's own migrations and alembic.ini: upgrade "
        "head, current, history, downgrade base, check, ... Each session table keeps its "
        "own version table, <table>_alembic_version."
    )
    _add_own_options(parser, top=True)
    for subparser in command_line.subparsers.choices.values():
        _add_own_options(subparser, top=False)
    options = parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        parser.error("too few arguments")  # alembic's own wording
    if options.config:
        parser.error(
            "-c/--config: sqlsession alembic runs sqlsession's own alembic.ini; run "
            "alembic itself for another one"
        )
    if options.name != "alembic":
        parser.error("-n/--name: sqlsession's alembic.ini has only the section 'alembic'")
    command = options.cmd[0].__name__
    if command in _REFUSED:
        parser.error(
            f"{command}: sqlsession's migration history ships with the package and is not "
            "edited here"
        )
    x = _x_options(options)
    _once(parser, "url", options.sqlsession_url, x)
    _once(parser, "table", options.sqlsession_table, x)
    _once(parser, "schema", options.sqlsession_schema, x)
    # env.py validates -x values itself; these copies are for messages only.
    return Invocation(
        command_line,
        options,
        url=x.get("url") or options.sqlsession_url,
        table=x.get("table") or options.sqlsession_table or DEFAULT_TABLE,
        schema=x.get("schema") or options.sqlsession_schema,
    )


def execute(invocation: Invocation) -> None:
    """Run a parsed ``sqlsession alembic`` command.

    Args:
        invocation: what `parse` returned.

    Raises:
        ConfigError: the URL is invalid, or alembic refused the command (for ``check``:
            the database differs from the table sqlsession expects).
        DatabaseUnavailableError, SchemaError, StorageError: as for ``sqlsession migrate``.
    """
    options = invocation.options
    full_url = resolve_url(invocation.url)
    # stdout as it is now: alembic's default is the one it found when it was imported.
    config = Config(file_=str(_migrate.alembic_ini()), cmd_opts=options, stdout=sys.stdout)
    # The scripts this sqlsession runs with `sqlsession migrate`, wherever it is installed;
    # config options go through configparser interpolation, so % is written %%.
    config.set_main_option("script_location", str(_migrate.script_location()).replace("%", "%%"))
    if options.sqlsession_url is not None:
        config.set_main_option("sqlalchemy.url", options.sqlsession_url.replace("%", "%%"))
    config.attributes.update(
        sqlsession_table=options.sqlsession_table, sqlsession_schema=options.sqlsession_schema
    )
    # Our one-line errors and exit code 3 rather than alembic's "FAILED:" and exit 1.
    options.raiseerr = True
    where = describe_table(full_url, invocation.table, invocation.schema)
    try:
        invocation.command_line.run_cmd(config, options)
    except SessionError:
        raise
    except CommandError as exc:
        if _unknown_stored_revision(exc, options):
            raise _migrate.translate_error(
                exc, full_url, invocation.table, invocation.schema
            ) from exc
        raise ConfigError(
            f"alembic {invocation.command} on the session table {where}: {first_line(exc)}."
        ) from exc
    except Exception as exc:
        raise _migrate.translate_error(exc, full_url, invocation.table, invocation.schema) from exc


def _unknown_stored_revision(exc: CommandError, options: argparse.Namespace) -> bool:
    """Whether alembic could not find the revision the database is at (not one given)."""
    found = re.search(r"Can't locate revision identified by '([^']*)'", str(exc))
    if found is None:
        return False
    given = [str(value) for value in vars(options).values() if isinstance(value, str)]
    return not any(found.group(1) in value for value in given)
