"""A real Debian OpenSSH server for the SFTP channel's tests, run as a child process.

It listens on a free port of 127.0.0.1 as the current user, with a host key, a client key and
an authorized_keys made for the run, no password or keyboard login, and OpenSSH's own
internal-sftp subsystem started in a directory of the test's (``-d``: no chroot, nothing of
the machine's own sshd configuration is read or touched). scripts/ensure-services.sh installs
``openssh-server``; the tests skip, saying why, only where no sshd binary exists at all."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from g2p_bridge.settings import SftpSettings

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


@dataclass
class OpenSshServer:
    root: Path  # the login directory: inbox/, outbox/, archive/
    port: int
    host_key_line: str  # "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
    client_key: Path
    process: subprocess.Popen[bytes]
    log: Path

    def settings(self, **overrides: object) -> SftpSettings:
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "username": getpass.getuser(),
            "private_key_file": str(self.client_key),
            "known_hosts": self.host_key_line,
            "connect_timeout_seconds": 10,
            "io_timeout_seconds": 10,
        }
        values.update(overrides)
        return SftpSettings(**values)  # type: ignore[arg-type]

    def reset(self) -> None:
        for name in ("inbox", "outbox", "archive"):
            shutil.rmtree(self.root / name, ignore_errors=True)
            (self.root / name).mkdir()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _keygen(path: Path) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "g2p-test", "-f", str(path)],
        check=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start_openssh(base: Path) -> OpenSshServer:
    if not os.access(SSHD, os.X_OK):
        pytest.skip(
            f"OpenSSH's sshd is not installed ({SSHD}); scripts/ensure-services.sh installs "
            "Debian's openssh-server"
        )
    if os.geteuid() == 0:
        # sshd as root wants its privilege-separation directory (ensure-services makes it).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    host_key, client_key = base / "host_ed25519", base / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    (base / "authorized_keys").write_text((base / "client_ed25519.pub").read_text())
    root = base / "sftp-root"
    root.mkdir()
    user = getpass.getuser()
    last_log = ""
    for _ in range(3):  # a port taken between choosing it and sshd binding it: choose again
        port = _free_port()
        config = base / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {base}/sshd.pid",
                    f"AuthorizedKeysFile {base}/authorized_keys",
                    # The test's temporary directories are not root-owned 0755 all the way up.
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {user}",
                    "AllowTcpForwarding no",
                    "X11Forwarding no",
                    f"Subsystem sftp internal-sftp -d {root}",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        log = base / f"sshd-{port}.log"
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(port):
                host_key_line = (base / "host_ed25519.pub").read_text().split()
                server = OpenSshServer(
                    root=root,
                    port=port,
                    host_key_line=f"[127.0.0.1]:{port} {host_key_line[0]} {host_key_line[1]}",
                    client_key=client_key,
                    process=process,
                    log=log,
                )
                server.reset()
                return server
            time.sleep(0.05)  # polling for the listening socket, bounded by the deadline
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        last_log = log.read_text(errors="replace")
    raise RuntimeError(f"sshd did not start on 127.0.0.1:\n{last_log}")
