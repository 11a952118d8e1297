"""Configuration of the Example Bank, read from ``EXAMPLE_BANK_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from example_bank.mt940_writer import NarrativeLayout

StatementFormat = Literal["camt053", "mt940"]


class BankSettings(BaseSettings):
    """All knobs of the simulated bank. Defaults give the embedded (single-process) mode."""

    model_config = SettingsConfigDict(env_prefix="EXAMPLE_BANK_", extra="ignore")

    # SQLite in the working directory means "embedded": no external services needed.
    database_url: str = "sqlite:///example_bank.db"
    # None means batches are processed by a background thread of the API process.
    broker_url: str | None = None
    bank_code: str = "EXAMPLE"
    # Logs go through the bridge's handler (same package): personal data masked, control
    # characters escaped, one line per record; "text" or "json".
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Share (0..1) of payments to OTHER banks that fail downstream and are reversed.
    # A ratio, not money, so a float is fine here.
    failure_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    seed: int = 42
    bridge_statement_url: str = "http://127.0.0.1:8000/upload_mt940"
    bridge_token: SecretStr | None = None
    statement_max_entries: int = Field(default=5000, ge=1)
    # How a statement's :86: narratives are laid out. "openg2p": OpenG2P's six lines (narrative,
    # program, cycle, beneficiary id, empty, return reason), which OpenG2P's own bridge reads by
    # line number; "subfields": /EREF/.../NAME/.../RTRN/... Either way the :61: customer
    # reference is the payment reference, and this bridge reads both.
    mt940_narrative_layout: NarrativeLayout = "openg2p"
    delivery_max_attempts: int = Field(default=8, ge=1)
    delivery_retry_seconds: float = Field(default=2.0, ge=0.0)
    delivery_timeout_seconds: float = Field(default=30.0, gt=0.0)
    processing_interval_seconds: float = Field(default=0.5, gt=0.0)
    # Payments handled per set-based step; bounds memory for very large batches.
    processing_chunk_size: int = Field(default=5000, ge=1)
    # A claimed batch whose worker vanished becomes claimable again after this.
    batch_lease_seconds: float = Field(default=300.0, gt=0.0)
    # A batch that raised this many times is parked as FAILED (visible, not retried).
    batch_max_attempts: int = Field(default=5, ge=1)

    # Where statements go: "http" posts MT940 to bridge_statement_url; "sftp" drops them in the
    # SFTP outbox (example_bank.file_channel) for the bridge to fetch, in sftp_statement_formats.
    statement_channel: Literal["http", "sftp"] = "http"
    # The SFTP endpoint (example_bank.sftp): off unless a port is given (0 picks a free one).
    # Key-based authentication only: the bridge's public key(s) in sftp_authorized_keys_file.
    # The host key is read from sftp_host_key_file, and written there (mode 0600) on first start
    # when the file does not exist, so the bridge can pin it in its known-hosts entry.
    sftp_port: int | None = Field(default=None, ge=0, le=65535)
    sftp_host: str = "127.0.0.1"
    sftp_username: str = "g2p-bridge"
    sftp_root: str = "example_bank_sftp"
    sftp_host_key_file: str = "example_bank_sftp_host_key"
    sftp_authorized_keys_file: str | None = None
    sftp_statement_formats: list[StatementFormat] = Field(
        default_factory=lambda: list[StatementFormat](["camt053"]), min_length=1
    )
    sftp_poll_seconds: float = Field(default=1.0, gt=0.0)
    # A payment file larger than this is refused unread (FF01). It is read whole before it is
    # answered (its totals come last): about 1 KB of memory per transaction, 440 bytes a file.
    sftp_max_file_bytes: int = Field(default=128 * 1024 * 1024, ge=1)

    # TEST ONLY, never in a real deployment: fault injection for the bridge's fault tests (see
    # example_bank.faults). "slow" does the work and holds the answer for fault_delay_seconds;
    # "error-5xx" answers 503 without doing anything; "close-after-processing" does the work and
    # drops the connection unanswered. Applies to POSTs on fault_paths (JSON list in the
    # environment): per path the 1st, (fault_every+1)th... call, fault_calls of them at most.
    # Off by default; when on, the API logs a WARNING at start and at every injected fault.
    fault_mode: Literal["slow", "error-5xx", "close-after-processing"] | None = None
    fault_paths: list[str] = Field(default_factory=lambda: ["/initiate_payment"])
    fault_calls: int = Field(default=3, ge=0)
    fault_every: int = Field(default=2, ge=1)
    fault_delay_seconds: float = Field(default=5.0, ge=0.0)
