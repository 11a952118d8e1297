"""The Example Bank's SFTP endpoint: an SSH server in-process (asyncssh), SFTP only.

It serves ``sftp_root`` (see :mod:`example_bank.file_channel` for the layout) to one user,
``sftp_username``, who authenticates with a key listed in ``sftp_authorized_keys_file``; there
is no password or keyboard-interactive login, no shell, no command, no port forwarding, no scp,
and no symbolic or hard links (a link in the inbox could make the bank read a file outside it).
The client is held inside the root by asyncssh's chroot. The host key comes from
``sftp_host_key_file``; when that file does not exist a new Ed25519 key is written there (mode
0600, with its public half beside it as ``.pub`` for the bridge's known-hosts entry).

:class:`SftpEndpoint` runs the server on its own event loop in a daemon thread, together with
the :class:`~example_bank.file_channel.FileChannelWorker` that takes in payment files and drops
statements.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import asyncssh
from sqlalchemy.orm import Session

from example_bank.file_channel import Directories, FileChannelWorker
from example_bank.settings import BankSettings

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 10.0


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key from ``path``; a new Ed25519 key is written there if none exists."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.export_private_key())
    Path(str(path) + ".pub").write_bytes(key.export_public_key())
    log.info("wrote a new SFTP host key to %s", path)
    return key


class _Server(asyncssh.SSHServer):
    """Public-key authentication of the one configured user; everything else is refused."""

    def __init__(self, username: str, keys: asyncssh.SSHAuthorizedKeys) -> None:
        self._username = username
        self._keys = keys
        self._connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connection = conn

    def begin_auth(self, username: str) -> bool:
        if username == self._username and self._connection is not None:
            self._connection.set_authorized_keys(self._keys)
        # Authentication is always required; a wrong user simply has no key that works.
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False


class _Files(asyncssh.SFTPServer):
    """Plain files and directories only."""

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("symbolic links are not allowed here")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("hard links are not allowed here")


class SftpEndpoint:
    """The SFTP server and the file channel behind it, started and stopped together."""

    def __init__(
        self,
        settings: BankSettings,
        session_factory: Callable[[], Session],
        *,
        run_file_channel: bool = True,
    ) -> None:
        if settings.sftp_port is None:
            raise ValueError("EXAMPLE_BANK_SFTP_PORT is not set: the SFTP endpoint is off")
        if not settings.sftp_authorized_keys_file:
            raise ValueError(
                "EXAMPLE_BANK_SFTP_AUTHORIZED_KEYS_FILE is not set: nobody could log in"
            )
        self.settings = settings
        self.directories = Directories.of(settings).create()
        self.files = FileChannelWorker(settings, session_factory) if run_file_channel else None
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncssh.SSHAcceptor | None = None

    def start(self) -> int:
        """Start listening; returns the port (the configured one, or the one picked for 0)."""
        if self._thread is not None:
            raise RuntimeError("the SFTP endpoint is already running")
        settings = self.settings
        host_key = load_or_create_host_key(Path(settings.sftp_host_key_file))
        keys = asyncssh.read_authorized_keys(str(settings.sftp_authorized_keys_file))
        root = str(self.directories.root).encode()
        loop = asyncio.new_event_loop()
        ready: Future[int] = Future()

        async def listen() -> None:
            self._server = await asyncssh.listen(
                settings.sftp_host,
                settings.sftp_port,
                server_factory=lambda: _Server(settings.sftp_username, keys),
                server_host_keys=[host_key],
                sftp_factory=lambda chan: _Files(chan, chroot=root),
                allow_scp=False,
                login_timeout=30,
                keepalive_interval=30,
            )
            ready.set_result(self._server.sockets[0].getsockname()[1])

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(listen())
            except BaseException as exc:  # reported to start(), which raises it
                if not ready.done():
                    ready.set_exception(exc)
                return
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="example-bank-sftp", daemon=True)
        self._thread.start()
        try:
            self.port = ready.result(timeout=START_TIMEOUT_SECONDS)
        except BaseException:
            self._thread.join(START_TIMEOUT_SECONDS)
            self._thread = None
            raise
        if self.files is not None:
            self.files.start()
        log.info("SFTP endpoint listening on %s:%s", settings.sftp_host, self.port)
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        if self.files is not None:
            self.files.stop(timeout)
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> SftpEndpoint:
        self.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
