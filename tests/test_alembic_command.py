"""``sqlsession alembic ARGS...`` and ``sqlsession alembic-ini``, from the checkout.

The commands run as subprocesses in an empty directory, as a user runs them; the same
commands run from the built wheel in tests/test_wheel.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sqlsession._table import SCHEMA_REVISION, version_table_name
from sqlsession.cli import main
from tests.conftest import admin, mysql_base_url, postgres_base_url, run_script, table_names

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    url: str
    table: str
    cwd: Path

    def sqlsession(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = run_script("sqlsession", *args, env=env, cwd=self.cwd)
        return Result(result.returncode, result.stdout, result.stderr)

    def tables(self) -> set[str]:
        return table_names(self.url) & {self.table, version_table_name(self.table)}


@dataclass
class Result:
    code: int
    out: str
    err: str


def error_lines(stderr: str) -> list[str]:
    """stderr without alembic's progress log (its INFO lines), which alembic prints too."""
    return [line for line in stderr.splitlines() if not line.startswith("INFO  [alembic.")]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mysql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A table name of our own on SQLite, PostgreSQL or MariaDB, and an empty directory."""
    table = "t_" + uuid.uuid4().hex[:12]
    empty = tmp_path / "empty"
    empty.mkdir()
    if request.param == "sqlite":
        yield Target(f"sqlite:///{tmp_path / 'sessions.db'}", table, empty)
        return
    url = postgres_base_url() if request.param == "postgresql" else mysql_base_url()
    try:
        yield Target(url, table, empty)
    finally:
        admin(url, f"DROP TABLE IF EXISTS {table}", f"DROP TABLE IF EXISTS {table}_alembic_version")


@pytest.mark.slow
def test_upgrade_current_history_check_and_downgrade(target: Target) -> None:
    own = ["--url", target.url, "--table", target.table]

    result = target.sqlsession("alembic", *own, "upgrade", "head")
    assert result.code == 0, result.err
    assert f"Running upgrade  -> {SCHEMA_REVISION}" in result.err  # alembic's own log
    assert target.tables() == {target.table, version_table_name(target.table)}

    # sqlsession's options may also follow the alembic command.
    result = target.sqlsession("alembic", "current", *own)
    assert (result.code, result.out) == (0, f"{SCHEMA_REVISION} (head)\n"), result.err

    result = target.sqlsession("alembic", "history")
    assert result.code == 0, result.err
    assert f"<base> -> {SCHEMA_REVISION} (head), Create the session table" in result.out

    result = target.sqlsession("alembic", *own, "check")
    assert (result.code, result.out) == (0, "No new upgrade operations detected.\n"), result.err

    result = target.sqlsession("alembic", *own, "downgrade", "base")
    assert result.code == 0, result.err
    assert target.tables() == set()  # the version table too

    result = target.sqlsession("alembic", *own, "current")
    assert (result.code, result.out) == (0, ""), result.err
    assert target.tables() == set()  # reading the revision created nothing


@pytest.mark.slow
def test_x_options_and_the_environment_name_the_database(target: Target) -> None:
    x = ["-x", f"url={target.url}", "-x", f"table={target.table}"]
    result = target.sqlsession("alembic", *x, "upgrade", "head")
    assert result.code == 0, result.err
    result = target.sqlsession(
        "alembic", "--table", target.table, "current", env={"SQLSESSION_URL": target.url}
    )
    assert (result.code, result.out) == (0, f"{SCHEMA_REVISION} (head)\n"), result.err
    result = target.sqlsession("alembic", *x, "downgrade", "base")
    assert result.code == 0, result.err
    assert target.tables() == set()


@pytest.mark.slow
def test_check_exits_3_with_one_line_when_the_table_differs(target: Target) -> None:
    own = ["--url", target.url, "--table", target.table]
    assert target.sqlsession("alembic", *own, "upgrade", "head").code == 0
    on = f" ON {target.table}" if target.url.startswith("mysql") else ""  # MySQL's syntax
    admin_or_sqlite(target, f"DROP INDEX {target.table}_expires_at_idx{on}")
    result = target.sqlsession("alembic", "-q", *own, "check")
    assert result.code == 3
    lines = result.err.splitlines()
    assert error_lines(result.err) == lines[-1:]
    assert "Traceback" not in result.err
    assert lines[-1].startswith(
        f"sqlsession alembic: error: alembic check on the session table '{target.table}'"
    )
    assert "New upgrade operations detected" in lines[-1]
    assert "add_index" in lines[-1]


def admin_or_sqlite(target: Target, statement: str) -> None:
    if target.url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(target.url.removeprefix("sqlite:///")) as conn:
            conn.execute(statement)
        conn.close()
    else:
        admin(target.url, statement)


@pytest.mark.slow
def test_errors_are_one_line_with_exit_3(tmp_path: Path) -> None:
    for args, phrase in [
        (["--url", "postgresql://nobody@127.0.0.1:1/x", "upgrade", "head"], "Cannot reach"),
        (["--url", "mssql://x/y", "current"], "Unsupported database URL scheme"),
        (["--url", f"sqlite:///{tmp_path / 'x.db'}", "--schema", "s", "current"], "PostgreSQL"),
        (
            ["--url", f"sqlite:///{tmp_path / 'x.db'}", "upgrade", "nope"],
            "alembic upgrade on the session table 'sqlsession' in sqlite+aiosqlite:///"
            f"{tmp_path / 'x.db'}: Can't locate revision identified by 'nope'.",
        ),
    ]:
        result = run_script("sqlsession", "alembic", "-q", *args, cwd=tmp_path)
        assert result.returncode == 3, (args, result.stderr)
        assert result.stdout == ""
        assert error_lines(result.stderr) == [result.stderr.splitlines()[-1]]
        assert result.stderr.splitlines()[-1].startswith("sqlsession alembic: error: ")
        assert phrase in result.stderr


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        ([], "too few arguments"),
        (["revision", "-m", "mine"], "revision: sqlsession's migration history ships"),
        (["merge", "heads"], "merge: sqlsession's migration history ships"),
        (["-c", "mine.ini", "current"], "-c/--config"),
        (["-n", "other", "current"], "-n/--name"),
        (["--url", "sqlite:///a.db", "-x", "url=sqlite:///b.db", "current"], "give the url once"),
        (["--table", "bad-name", "current"], "plain SQL identifier"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    phrase: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["alembic", *args]) == 2
    err = capsys.readouterr().err
    assert "usage: sqlsession alembic" in err
    assert phrase in err
    assert not list(tmp_path.iterdir())


def test_help_shows_alembics_commands_and_sqlsessions_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["alembic", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sqlsession alembic")
    for word in ("upgrade", "downgrade", "check", "--url URL", "--table TABLE", "--schema SCHEMA"):
        assert word in out
    assert main(["--help"]) == 0
    assert "alembic-ini" in capsys.readouterr().out


def test_alembic_ini_from_a_checkout_is_the_repositorys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alembic-ini"]) == 0
    assert capsys.readouterr().out == f"{ROOT / 'alembic.ini'}\n"


@pytest.mark.slow
def test_alembic_with_the_printed_ini_works_from_another_directory(tmp_path: Path) -> None:
    ini = run_script("sqlsession", "alembic-ini", cwd=tmp_path).stdout.strip()
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = run_script("alembic", "-c", ini, "-x", f"url={url}", "upgrade", "head", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert table_names(url) == {"sqlsession", "sqlsession_alembic_version"}


def test_the_packaged_ini_names_the_packaged_scripts() -> None:
    import configparser

    packaged = configparser.ConfigParser(interpolation=None)
    packaged.read(ROOT / "sqlsession" / "alembic.ini")
    assert packaged["alembic"]["script_location"] == "sqlsession:_migrations"
    # The logging sections alembic's env.py needs for fileConfig, as in the checkout's.
    checkout = configparser.ConfigParser(interpolation=None)
    checkout.read(ROOT / "alembic.ini")
    assert set(packaged.sections()) == set(checkout.sections())
    for section in packaged.sections():
        if section != "alembic":
            assert dict(packaged[section]) == dict(checkout[section])


@pytest.mark.slow
def test_a_database_at_an_unknown_revision_says_to_upgrade_sqlsession(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["migrate", "--url", url]) == 0
    target = Target(url, "sqlsession", tmp_path)
    admin_or_sqlite(target, "UPDATE sqlsession_alembic_version SET version_num = '9999'")
    result = target.sqlsession("alembic", "--url", url, "upgrade", "head")
    assert result.code == 3
    assert error_lines(result.err) == result.err.splitlines()[-1:]
    assert "is at a migration this sqlsession does not know" in result.err
    assert "'9999'" in result.err
