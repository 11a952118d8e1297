"""``g2p-bridge demo --channel iso20022-sftp``: the Example Bank reached through files over SFTP.

Everything both sides need is made in the demo's work directory: the bridge's client key, the
bank's host key (the bridge pins it as its known-hosts entry) and the bank's authorized_keys.
The bank's SFTP endpoint listens on a free loopback port; the bridge sends pain.001 files to it
and takes pain.002 reports and camt.053 statements from its outbox (funds are arranged
beforehand, as with a real sponsor bank: the bank blocks them when a file comes in).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from g2p_bridge.settings import BankConnectorSettings, SftpSettings

CHANNELS = ("example-bank", "iso20022-sftp")


@dataclass(frozen=True, slots=True)
class SftpDemoChannel:
    bridge: BankConnectorSettings  # the sponsor bank's profile on the bridge
    bank: dict[str, Any]  # the Example Bank's settings for its side


def sftp_channel(workdir: Path, bank_url: str, bank_code: str) -> SftpDemoChannel:
    import asyncssh

    from example_bank.sftp import load_or_create_host_key

    keys = workdir / "sftp-keys"
    keys.mkdir(parents=True, exist_ok=True)
    client = asyncssh.generate_private_key("ssh-ed25519")
    client_path = keys / "bridge_ed25519"
    client.write_private_key(str(client_path))
    (keys / "authorized_keys").write_bytes(client.export_public_key())
    host_key_path = keys / "bank_host_ed25519"
    host_key = load_or_create_host_key(host_key_path)
    # Chosen now because the bridge's profile needs it before the bank starts; a port taken
    # meanwhile makes the bank's start fail loudly rather than talk to someone else.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    host_line = f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}"
    return SftpDemoChannel(
        bridge=BankConnectorSettings(
            channel="iso20022-sftp",
            base_url=bank_url,
            bank_member_id=bank_code,
            poll_interval_seconds=0.3,
            sftp=SftpSettings(
                host="127.0.0.1",
                port=port,
                username="g2p-bridge",
                private_key_file=str(client_path),
                known_hosts=host_line,
                connect_timeout_seconds=10,
                io_timeout_seconds=30,
            ),
        ),
        bank={
            "statement_channel": "sftp",
            "sftp_port": port,
            "sftp_username": "g2p-bridge",
            "sftp_root": str(workdir / "bank-sftp"),
            "sftp_host_key_file": str(host_key_path),
            "sftp_authorized_keys_file": str(keys / "authorized_keys"),
            "sftp_poll_seconds": 0.2,
        },
    )
