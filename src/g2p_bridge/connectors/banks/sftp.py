"""An SFTP session to a bank's file server: verified host key, key-based login, timeouts.

The protocol work only (connect, upload with ``.part`` and rename, list, read, archive), so
the ISO 20022 connector above it stays about files and their meaning. Every failure of the
network, the SSH layer or the server is a :class:`BankUnavailable` (retry later); a host key
that matches no known-hosts entry is a :class:`HostKeyRefused`, which is one too: nothing is
sent to a server that cannot prove who it is, and an operator must fix the entry."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import paramiko

from g2p_bridge.connectors.banks.base import BankUnavailable, RemoteFile
from g2p_bridge.settings import SftpSettings

log = logging.getLogger(__name__)

# Bytes per SFTP write: paramiko pipelines them; large enough to keep the link busy.
CHUNK_BYTES = 256 * 1024

# What an SSH key type in known_hosts lets the server sign with: an RSA key signs with SHA-2.
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


class HostKeyRefused(BankUnavailable):
    """The server's host key is not the one the known-hosts entry names (or there is none)."""


def _unavailable(what: str, exc: BaseException) -> BankUnavailable:
    return BankUnavailable(f"SFTP {what}: {type(exc).__name__}: {exc}")


class SftpServer:
    """Opens sessions to one bank's SFTP server as its :class:`SftpSettings` say."""

    def __init__(self, settings: SftpSettings) -> None:
        self.settings = settings
        self._known = self._known_hosts()

    @property
    def host_id(self) -> str:
        """The server's name in known_hosts: ``host``, or ``[host]:port`` off port 22."""
        s = self.settings
        return s.host if s.port == 22 else f"[{s.host}]:{s.port}"

    def _known_hosts(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        s = self.settings
        if s.known_hosts_file:
            keys.load(s.known_hosts_file)
        for line in (s.known_hosts or "").splitlines():
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            if entry is not None and entry.key is not None:
                for name in entry.hostnames:
                    keys.add(name, entry.key.get_name(), entry.key)
        return keys

    def _client_key(self) -> paramiko.PKey:
        s = self.settings
        passphrase = (
            s.private_key_passphrase.get_secret_value() if s.private_key_passphrase else None
        )
        try:
            if s.private_key is not None:
                return _key_from_text(s.private_key.get_secret_value(), passphrase)
            if s.private_key_file:
                return paramiko.PKey.from_path(s.private_key_file, passphrase)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise BankUnavailable(f"SFTP client key cannot be read: {exc}") from exc
        raise BankUnavailable("SFTP: no client key configured (private_key or private_key_file)")

    @contextmanager
    def session(self) -> Iterator[SftpSession]:
        expected = self._known.lookup(self.host_id)
        if not expected:
            raise HostKeyRefused(
                f"SFTP {self.host_id}: no known-hosts entry for this server; refusing to connect"
            )
        s = self.settings
        client_key = self._client_key()
        try:
            sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout_seconds)
        except OSError as exc:
            raise _unavailable(f"connect to {self.host_id}", exc) from exc
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = s.connect_timeout_seconds
            transport.auth_timeout = s.connect_timeout_seconds
            # Ask only for the key types we can verify, so the server signs with a known one.
            algorithms = [a for name in expected for a in _ALGORITHMS.get(name, (name,))]
            transport.get_security_options().key_types = algorithms
            try:
                transport.start_client(timeout=s.connect_timeout_seconds)
                # A server that never sends its banner ends the handshake thread without
                # start_client raising: the transport is simply not active.
                if not transport.is_active():
                    raise paramiko.SSHException("no SSH handshake within the connect timeout")
                offered = transport.get_remote_server_key()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise _unavailable(f"handshake with {self.host_id}", exc) from exc
            known = expected.get(offered.get_name())
            if known is None or known != offered:
                raise HostKeyRefused(
                    f"SFTP {self.host_id}: host key {offered.get_name()} "
                    f"{offered.fingerprint} matches no known-hosts entry; refusing to connect"
                )
            try:
                transport.auth_publickey(s.username, client_key)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise _unavailable(f"login to {self.host_id} as {s.username}", exc) from exc
            try:
                client = paramiko.SFTPClient.from_transport(transport)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise _unavailable(f"sftp subsystem of {self.host_id}", exc) from exc
            if client is None:
                raise BankUnavailable(f"SFTP {self.host_id}: the server opened no sftp channel")
            client.get_channel().settimeout(s.io_timeout_seconds)  # type: ignore[union-attr]
            with client:
                yield SftpSession(client, s)
        finally:
            transport.close()


def _key_from_text(text: str, passphrase: str | None) -> paramiko.PKey:
    errors: list[str] = []
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text), passphrase)
        except paramiko.SSHException as exc:
            errors.append(f"{key_class.__name__}: {exc}")
    raise ValueError("not a private key paramiko reads: " + "; ".join(errors))


class SftpSession:
    """One connected SFTP session. Paths are relative to the login directory."""

    def __init__(self, client: paramiko.SFTPClient, settings: SftpSettings) -> None:
        self.client = client
        self.settings = settings

    def _exists(self, path: str) -> bool:
        try:
            self.client.stat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise _unavailable(f"stat {path}", exc) from exc
        return True

    def sha256_of(self, path: str) -> str | None:
        """The content hash of a remote file, None when it is not there."""
        try:
            with self.client.open(path, "rb") as remote:
                remote.prefetch()
                digest = hashlib.sha256()
                while chunk := remote.read(CHUNK_BYTES):
                    digest.update(chunk)
                return digest.hexdigest()
        except FileNotFoundError:
            return None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise _unavailable(f"read {path}", exc) from exc

    def put_atomic(self, directory: str, name: str, source: IO[bytes], size: int) -> None:
        """Writes ``directory/name.part`` from the start (a .part left by a cut upload is
        overwritten) and renames it to ``name`` once every byte is there, so the bank never
        picks up half a file."""
        final = f"{directory}/{name}"
        partial = final + ".part"
        try:
            source.seek(0)
            with self.client.open(partial, "wb") as remote:
                remote.set_pipelined(True)
                while chunk := source.read(CHUNK_BYTES):
                    remote.write(chunk)
            written = self.client.stat(partial).st_size
            if written != size:
                raise BankUnavailable(f"SFTP {partial}: {written} bytes arrived of {size}")
            # A plain rename: OpenSSH refuses it when the final name exists, so a file already
            # delivered is never replaced.
            self.client.rename(partial, final)
        except BankUnavailable:
            raise
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            raise _unavailable(f"upload {final}", exc) from exc

    def list(self, directory: str) -> list[RemoteFile]:
        try:
            return [
                RemoteFile(a.filename, a.st_size or 0)
                for a in self.client.listdir_attr(directory)
                # Regular files; a server that sends permissions without the type bits (some
                # do) has its entries taken as files, and reading a directory then fails.
                if a.st_mode is None or (a.st_mode & 0o170000) in (0, 0o100000)
            ]
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise _unavailable(f"list {directory}", exc) from exc

    def read(self, path: str, limit: int) -> bytes:
        try:
            with self.client.open(path, "rb") as remote:
                remote.prefetch()
                content = remote.read(limit + 1)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise _unavailable(f"read {path}", exc) from exc
        if len(content) > limit:
            raise BankUnavailable(f"SFTP {path}: larger than {limit} bytes")
        return content

    def move(self, source: str, directory: str, name: str, content_sha256: str) -> str:
        """Moves a file into ``directory``; a name already taken there (an earlier file of the
        same name) gets the content hash in front. Returns the path it went to."""
        target = f"{directory}/{name}"
        try:
            if self._exists(target):
                target = f"{directory}/{content_sha256[:16]}-{name}"
                if self._exists(target):
                    # The same content archived before (moved, then listed again from a copy).
                    self.client.remove(source)
                    return target
            self.client.rename(source, target)
        except BankUnavailable:
            raise
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise _unavailable(f"move {source} to {target}", exc) from exc
        return target

    def ensure_directory(self, directory: str) -> None:
        if not self._exists(directory):
            try:
                self.client.mkdir(directory)
            except (OSError, paramiko.SSHException, EOFError) as exc:
                raise _unavailable(f"mkdir {directory}", exc) from exc
