"""The bridge's one configuration object, read from the environment (prefix ``G2P_BRIDGE_``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SftpSettings(BaseModel):
    """Where a bank's SFTP server is and how the bridge proves who it is and who the server is.

    Keys and known-hosts entries come from secrets: a file path (a mounted Kubernetes secret)
    or the text itself (``..._PRIVATE_KEY`` from a secret-backed environment variable). The
    server's host key must match a known-hosts entry: an unknown or changed key is refused,
    never learnt."""

    host: str = "127.0.0.1"
    port: int = Field(default=22, ge=1, le=65535)
    username: str = "g2p-bridge"
    private_key_file: str | None = None
    private_key: SecretStr | None = None
    private_key_passphrase: SecretStr | None = None
    known_hosts_file: str | None = None
    known_hosts: str | None = None  # known_hosts lines, as ssh-keyscan prints them
    connect_timeout_seconds: float = Field(default=15.0, gt=0)
    # A read or write that waits longer than this on the server counts as a dropped connection.
    io_timeout_seconds: float = Field(default=60.0, gt=0)
    inbox_dir: str = "inbox"
    outbox_dir: str = "outbox"
    archive_dir: str = "archive"
    # Outbox files larger than this are recorded as refused and archived, never downloaded.
    max_file_bytes: int = Field(default=20 * 1024 * 1024, ge=1)


class BankConnectorSettings(BaseSettings):
    """One sponsor bank's profile (``G2P_BRIDGE_BANK_CONNECTORS__<CODE>__CHANNEL``...): which
    channel reaches it and, for a file channel, the formats and conventions it expects."""

    # Profiles are read from the bridge's variables (G2P_BRIDGE_BANK_CONNECTORS__<CODE>__...)
    # by Settings. Without a prefix of its own, building one would also read unprefixed
    # variables such as CHANNEL or BASE_URL from whatever environment the process has.
    model_config = SettingsConfigDict(env_prefix="G2P_BRIDGE_BANK_PROFILE_DEFAULT_")

    # The connector: "example-bank" (the Example Bank's JSON API), "iso20022-sftp" (pain.001
    # out, pain.002/camt.053/camt.054/MT940 back, over SFTP), or any installed connector's
    # entry-point name. None: the connector registered under the bank's code, as before.
    channel: str | None = None
    base_url: str = "http://127.0.0.1:8003"
    api_key: SecretStr | None = None
    timeout_seconds: float = 30.0
    verify_tls: bool = True

    # ISO 20022 over SFTP.
    sftp: SftpSettings = Field(default_factory=SftpSettings)
    pain001_version: Literal["pain.001.001.09", "pain.001.001.03"] = "pain.001.001.09"
    # Banks that take only the SEPA Latin character set: other text is refused, not mangled.
    latin_only: bool = False
    charge_bearer: str | None = None
    # How account numbers are identified: "BBAN" or another ISO code goes in Othr/SchmeNm/Cd,
    # "IBAN" writes them as IBANs.
    account_scheme: str = "BBAN"
    batch_booking: bool | None = None  # None: the bank's default
    # The payment file's name in the inbox; {batch_id} is required (a resend is recognised by
    # it) and the name must end in .xml.
    payment_file_name: str = "{batch_id}.pain001.xml"
    initiating_party_name: str = "G2P Bridge"
    # The sponsor bank as the debtor agent: its BIC, else its clearing/member code.
    bank_bic: str | None = None
    bank_member_id: str | None = None
    poll_interval_seconds: float = Field(default=60.0, gt=0)
    # Funds over a file channel: "prearranged" (the program account is funded for the payroll
    # beforehand, as treasury does; the bank refuses a file it cannot cover with AM04 in
    # pain.002) or "example-bank-api" (check and block through the bank's JSON API at base_url).
    funds: Literal["prearranged", "example-bank-api"] = "prearranged"
    # File- or group-level pain.002 rejection reasons a resend of the same file can cure (a
    # cut-off time missed); any other reason parks the batch for an operator.
    resend_on_reasons: tuple[str, ...] = ("TM01",)

    @field_validator("payment_file_name")
    @classmethod
    def _file_name_has_batch_id(cls, value: str) -> str:
        if "{batch_id}" not in value or not value.endswith(".xml") or "/" in value:
            raise ValueError("payment_file_name must hold {batch_id}, end in .xml, and no '/'")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="G2P_BRIDGE_", env_nested_delimiter="__", extra="ignore"
    )

    # Unset means the embedded default: a SQLite file here and tasks run in-process.
    database_url: str = "sqlite:///g2p_bridge.db"
    broker_url: str | None = None
    log_level: str = "INFO"

    # Producers and workers.
    beat_interval_seconds: float = 1.0
    # A worker's claim on a row lasts this long and its heartbeat renews it every third of it
    # while the step works, so a claimant that died (SIGKILL, a lost machine) gives its row
    # up within one lease, whatever the step's length. A row claimed just before its worker
    # died comes back a whole lease later: 20 s keeps that under half a minute with margin,
    # and is still far beyond any pause a live worker's heartbeat thread can take.
    lease_seconds: float = 20.0
    # A wake-up sent for an unclaimed row is sent again after this long if nobody claimed the
    # row meanwhile (the message was lost with a broker). Duplicates are harmless: claims are
    # compare-and-set.
    wake_resend_seconds: float = 10.0
    # The longest a step may run (Celery's hard time limit; the heartbeat stops renewing after
    # it too), so a step stuck for ever cannot hold its row for ever.
    step_time_limit_seconds: int = 300
    mapper_batch_size: int = 1000
    dispatch_batch_size: int = 1000
    # Rows a producer tick holds in memory: this times the batch size. 20,000 per tick at two
    # ticks a second is several times what the workers of one machine can take.
    batches_planned_per_tick: int = 20
    max_attempts: int = 5
    retry_backoff_seconds: float = 5.0
    allow_future_schedule_dates: bool = False

    # API limits.
    max_disbursements_per_request: int = 10_000
    max_statement_bytes: int = 20 * 1024 * 1024
    max_request_bytes: int = 64 * 1024 * 1024
    # Bulk requests (create/cancel disbursements) one API process works on at once; more wait
    # their turn. Each holds its parsed body in memory, and the GIL runs one at a time anyway,
    # so this bounds memory without costing throughput.
    max_concurrent_bulk_requests: int = 2
    # Any single string in a G2P Connect request body, and the program configuration body.
    max_string_length: int = 1024
    max_program_request_bytes: int = 64 * 1024
    # Payroll files (core/payroll_files.py): spooled to a temporary file past 1 MiB, read
    # streaming, so memory stays flat whatever the size up to these. The bytes are those of
    # max_request_bytes and of the Helm chart's Ingress body limit (64m): raise them together.
    max_payroll_file_bytes: int = 64 * 1024 * 1024
    max_payroll_file_rows: int = 1_000_000

    # Authentication: bearer JWTs checked against a JWKS URL or one static key. With none of the
    # three set, the embedded SQLite default generates a key file next to the database; any other
    # deployment refuses to start unless auth_disabled is set explicitly.
    auth_jwks_url: str | None = None
    auth_jwks_timeout_seconds: float = 5.0
    auth_jwks_cache_seconds: float = 300.0
    auth_secret_key: SecretStr | None = None
    auth_public_key: str | None = None
    auth_issuer: str = "g2p-bridge"
    auth_audience: str = "g2p-bridge"
    auth_leeway_seconds: int = 30
    auth_disabled: bool = False
    auth_key_file: str | None = None

    # Console sign-in through the organisation's OpenID Connect provider (console/oidc.py):
    # on when a client id is set. The issuer is the API's (auth_issuer) unless given here; its
    # discovery document names the endpoints and the JWKS. Roles come from the claim named
    # here (a list or a space-separated string; a dotted path reaches into an object, as
    # Keycloak's realm_access.roles), each mapped by console_oidc_role_map to viewer,
    # operator, approver or admin; programs from the claim the API reads ("programs").
    console_oidc_client_id: str | None = None
    console_oidc_client_secret: SecretStr | None = None
    console_oidc_issuer: str | None = None
    # Unset: this host's /console/oidc/callback, as the browser reached it.
    console_oidc_redirect_url: str | None = None
    console_oidc_scopes: str = "openid profile"
    console_oidc_username_claim: str = "preferred_username"
    console_oidc_roles_claim: str = "roles"
    console_oidc_role_map: dict[str, str] = Field(
        default_factory=lambda: {r: r for r in ("viewer", "operator", "approver", "admin")}
    )
    console_oidc_programs_claim: str = "programs"
    console_oidc_timeout_seconds: float = 10.0
    # Local (password) users: unset means on for the embedded default and wherever no OpenID
    # Connect provider is configured, off otherwise.
    console_local_sign_in: bool | None = None

    @property
    def console_oidc_enabled(self) -> bool:
        return bool(self.console_oidc_client_id)

    @property
    def console_oidc_issuer_url(self) -> str:
        return (self.console_oidc_issuer or self.auth_issuer).rstrip("/")

    @property
    def console_local_sign_in_enabled(self) -> bool:
        if self.console_local_sign_in is not None:
            return self.console_local_sign_in
        return self.embedded or not self.console_oidc_enabled

    # Observability.
    log_format: str = "text"
    broker_check_timeout_seconds: float = 2.0
    metrics_state_cache_seconds: float = 5.0
    # Unset: /metrics is a route of the API itself (the embedded default, on 127.0.0.1). Set:
    # the API process serves /metrics only on this port, from a small listener of its own, and
    # the API's port answers 404 there; a Kubernetes Service can then expose it in the cluster
    # while the Ingress, which routes only the API's port, never can. 0 picks a free port.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # Results pushed to the PBMS (core/callbacks.py). A callback carries at most this many
    # disbursement results, so a 1,000,000-disbursement envelope needs about a thousand.
    callback_batch_size: int = 1000
    callback_timeout_seconds: float = 10.0
    # Retries back off from callback_retry_backoff_seconds, doubling up to the maximum: with
    # these defaults a stream is parked for an operator only after about 80 minutes of
    # failures, so a PBMS down for an hour gets everything afterwards by itself.
    callback_max_attempts: int = 15
    callback_retry_backoff_seconds: float = 5.0
    callback_retry_backoff_max_seconds: float = 600.0
    # Callbacks one worker sends for an envelope before giving the stream back to the sweep.
    callback_events_per_run: int = 100
    # The bridge's Ed25519 key (PKCS#8 PEM) that signs every callback (detached JWS, EdDSA);
    # its public half is served at /.well-known/jwks.json. Unset: the embedded default keeps
    # a generated key next to the SQLite database; other deployments must set it.
    callback_signing_key: SecretStr | None = None
    callback_signing_key_file: str | None = None
    # Plain http is refused for a callback URL except to the loopback interface.
    callback_allow_http: bool = False

    # Connectors and resolvers.
    bank_connectors: dict[str, BankConnectorSettings] = Field(
        default_factory=lambda: {"EXAMPLE": BankConnectorSettings()}
    )
    mapper_url: str = "http://127.0.0.1:8005/sync/resolve"
    mapper_timeout_seconds: float = 30.0
    local_mapping_file: str | None = None
    fa_regex_bank_account: str = (
        r"^account:(?P<account_number>[^@]+)@(?P<bank_code>[^.]+)(?:\.(?P<branch_code>.+))?$"
    )
    fa_regex_mobile_wallet: str = r"^mobile:(?P<mobile_number>[^@]+)@(?P<provider>.+)$"
    fa_regex_email_wallet: str = r"^email:(?P<email_address>[^@]+@[^@]+)@(?P<provider>[^@]+)$"

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @field_validator("bank_connectors", mode="after")
    @classmethod
    def _bank_codes_upper(
        cls, value: dict[str, BankConnectorSettings]
    ) -> dict[str, BankConnectorSettings]:
        # Environment variable names come in lower-cased; bank codes are upper case. One bank
        # given both as JSON (G2P_BRIDGE_BANK_CONNECTORS, keys keep their case) and as nested
        # variables (keys lower-cased) arrives twice: combine the fields each one set, the
        # nested ones winning as pydantic-settings does, rather than let one silently replace
        # the other (a timeout from the JSON used to be dropped so).
        merged: dict[str, BankConnectorSettings] = {}
        for code, connector in value.items():
            key = code.upper()
            if key in merged:
                update = connector.model_dump(include=connector.model_fields_set)
                connector = merged[key].model_copy(update=update)
            merged[key] = connector
        return merged

    @model_validator(mode="after")
    def _positive_sizes(self) -> Settings:
        for name in (
            "mapper_batch_size",
            "dispatch_batch_size",
            "max_attempts",
            "callback_batch_size",
            "callback_max_attempts",
            "callback_events_per_run",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.lease_seconds <= 0 or self.wake_resend_seconds <= 0:
            raise ValueError("lease_seconds and wake_resend_seconds must be positive")
        if self.step_time_limit_seconds < self.lease_seconds:
            raise ValueError("step_time_limit_seconds must be at least lease_seconds")
        if self.max_string_length < 1:
            raise ValueError("max_string_length must be at least 1")
        if self.log_format not in ("text", "json"):
            raise ValueError("log_format must be text or json")
        unknown = set(self.console_oidc_role_map.values()) - {
            "viewer",
            "operator",
            "approver",
            "admin",
        }
        if unknown:
            raise ValueError(f"console_oidc_role_map maps to unknown roles {sorted(unknown)}")
        if self.console_oidc_enabled and not self.console_oidc_issuer_url.startswith(
            ("https://", "http://127.0.0.1", "http://localhost")
        ):
            raise ValueError("the OpenID Connect issuer must be an https:// URL")
        return self


@lru_cache
def get_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
