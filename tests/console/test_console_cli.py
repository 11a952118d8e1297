"""``g2p-bridge users add``: the password from stdin, hashed with argon2id, never printed."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from g2p_bridge import cli
from g2p_bridge.db import make_engine, make_session_factory, transaction
from g2p_bridge.models import ConsoleUser


def test_users_add_hashes_the_password_from_stdin(tmp_path: Path, sqlite_template: Path) -> None:
    database = tmp_path / "bridge.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite:///{database}"
    password = "a long enough passphrase"
    cli.get_settings.cache_clear()
    try:
        runner = CliRunner(env={"G2P_BRIDGE_DATABASE_URL": url})
        args = ["users", "add", "--username", "ana", "--role", "approver", "--program", "P1"]
        added = runner.invoke(cli.main, [*args, "--password-stdin"], input=password + "\n")
        again = runner.invoke(cli.main, [*args, "--password-stdin"], input=password + "\n")
        short = runner.invoke(
            cli.main,
            ["users", "add", "--username", "bo", "--role", "viewer", "--program", "*",
             "--password-stdin"],
            input="short\n",
        )  # fmt: skip
    finally:
        cli.get_settings.cache_clear()
    assert added.exit_code == 0, added.output
    assert password not in added.output
    assert again.exit_code != 0 and "exists" in again.output
    assert short.exit_code != 0 and "at least 12" in short.output
    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as session:
        user = session.get(ConsoleUser, "ana")
        assert user is not None
        assert user.role == "approver" and user.programs == "P1"
        assert user.password_hash.startswith("$argon2id$")
        assert session.get(ConsoleUser, "bo") is None
    engine.dispose()
