"""Configuration, read once at start from the environment (and `.env`) and passed down."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from selfheal.core.alerts import AlertPolicy, DeliveryPolicy
from selfheal.core.circuit import CircuitPolicy
from selfheal.core.llm_prompt import AdvicePolicy
from selfheal.core.ratelimit import DEFAULT_MAX_WAIT
from selfheal.core.thresholds import Thresholds
from selfheal.models import Channel

__all__ = ["ConfigError", "Settings", "load_settings", "parse_address"]


class ConfigError(Exception):
    """Bad configuration; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SELFHEAL_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # The specification's names, kept as they are.
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    slack_webhook_url: SecretStr | None = Field(default=None, validation_alias="SLACK_WEBHOOK_URL")
    teams_webhook_url: SecretStr | None = Field(
        default=None, validation_alias="MICROSOFT_TEAMS_WEBHOOK_URL"
    )
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", validation_alias="OPENAI_BASE_URL"
    )
    environment: str = Field(default="production", validation_alias="ENVIRONMENT")
    # POST /integration-self-heal answers only requests that carry it; unset: no intake.
    internal_webhook_token: SecretStr | None = Field(
        default=None, validation_alias="INTERNAL_WEBHOOK_TOKEN"
    )

    # Everything else is SELFHEAL_*.
    listen_database_url: SecretStr | None = None
    # "auto": a pooler between us and Postgres is detected at start (the backend we talk
    # to is not the one the connection announced); "pgbouncer" says so, "none" skips it.
    database_pooler: Literal["auto", "none", "pgbouncer"] = "auto"
    db_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)  # every round trip
    data_dir: str | None = None
    lease_seconds: float = Field(default=60.0, gt=0, le=86_400)
    scan_interval_seconds: float = Field(default=900.0, gt=0)
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    listen_check_seconds: float = Field(default=30.0, gt=0)
    batch_size: int = Field(default=1000, ge=1, le=50_000)
    scan_chunk_size: int = Field(default=10_000, ge=1)
    max_processing_attempts: int = Field(default=3, ge=1, le=100)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)
    max_concurrency: int = Field(default=64, ge=1)  # outbound requests in flight
    max_recoveries: int = Field(default=1000, ge=1)  # recoveries in progress (most wait)
    db_pool_size: int = Field(default=8, ge=2)
    service_concurrency: int = Field(default=8, ge=1)
    http_timeout_seconds: float = Field(default=10.0, gt=0)
    # Replays to 127.0.0.0/8 and ::1: for tests and demos, whose stand-ins are local.
    allow_loopback: bool = False
    http_network_backend: Literal["asyncio", "httpcore"] = "asyncio"
    max_retry_wait_seconds: float = Field(default=DEFAULT_MAX_WAIT, gt=0)
    # The specification's disable thresholds.
    disable_auth_after: int = Field(default=3, ge=1)  # consecutive, per user connection
    disable_network_after: int = Field(default=9, ge=1)  # per service, within the window
    network_window_minutes: float = Field(default=60.0, gt=0)
    disable_data_after: int = Field(default=5, ge=1)  # consecutive, per service
    disable_unknown_after: int = Field(default=5, ge=1)  # consecutive, per service
    # Circuits: replays that find a service down, in a row, before it is probed instead.
    circuit_open_after: int = Field(default=5, ge=1)
    circuit_probe_base_seconds: float = Field(default=1.0, gt=0)
    circuit_probe_max_seconds: float = Field(default=10.0, gt=0)
    circuit_count_interval_seconds: float = Field(default=60.0, ge=0)
    # Admin alerts: a group's first failure waits this long (healed by then: no message);
    # then at most one digest per group per interval.
    alert_group_wait_seconds: float = Field(default=30.0, ge=0)
    alert_group_interval_seconds: float = Field(default=300.0, gt=0)
    alert_send_interval_seconds: float = Field(default=1.0, ge=0)  # per webhook
    alert_retry_base_seconds: float = Field(default=1.0, gt=0)
    alert_retry_max_seconds: float = Field(default=300.0, gt=0)
    dashboard_url: str | None = None  # linked from alerts when set
    # The LLM's second opinion (the specification's useLLM), with OPENAI_API_KEY: asked
    # about unknown failures and those the analyzer is less sure of than the minimum.
    use_llm: bool = False
    llm_model: str = Field(default="gpt-4o-mini", min_length=1)
    llm_min_confidence: float = Field(default=0.6, ge=0, le=1)
    llm_concurrency: int = Field(default=2, ge=1, le=64)  # questions in flight, all daemons
    llm_max_calls_per_hour: int = Field(default=120, ge=0)  # all daemons together
    llm_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # host:port of the daemon's HTTP server (/metrics, /healthz, the dashboard); empty: no
    # server. Bound to anything but loopback, SELFHEAL_HTTP_TOKEN is required.
    http_addr: str = ""
    # Unlocks the dashboard's buttons (and its reading, off loopback).
    http_token: SecretStr | None = None
    # POST /integration-self-heal answers within the recovery, or with the pending record
    # after this long (the recovery goes on).
    webhook_wait_seconds: float = Field(default=10.0, gt=0, le=300)
    # A loop (listener, claimer, healer) working this long without progress is stuck:
    # /healthz says so, and systemd's watchdog pings stop (every wait on Postgres ends at
    # SELFHEAL_DB_TIMEOUT_SECONDS, so this is longer).
    watchdog_stall_seconds: float = Field(default=60.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("slack_webhook_url", "teams_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        url = "" if value is None else value.get_secret_value().strip()
        if not url:
            return None
        problem = webhook_url_problem(url, teams=info.field_name == "teams_webhook_url")
        if problem:
            raise ValueError(problem)  # the message never holds the URL: it is a secret
        return SecretStr(url)

    @field_validator("openai_base_url")
    @classmethod
    def _openai_base_url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        parts = urlsplit(url)
        if webhook_url_problem(url, teams=False) or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL such as https://api.openai.com/v1")
        if "@" in parts.netloc:
            raise ValueError("must not hold a user or password: the key is OPENAI_API_KEY")
        return url

    @field_validator("internal_webhook_token", "http_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        token = "" if value is None else value.get_secret_value().strip()
        return SecretStr(token) if token else None

    @field_validator("openai_api_key")
    @classmethod
    def _openai_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        key = "" if value is None else value.get_secret_value().strip()
        if not key:
            return None
        if not (key.isascii() and key.isprintable()) or " " in key:
            raise ValueError("must be printable ASCII without spaces")  # never the key itself
        return SecretStr(key)

    @field_validator("http_addr")
    @classmethod
    def _http_addr(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_address(value)
        return value

    @field_validator("dashboard_url")
    @classmethod
    def _dashboard_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if urlsplit(value.strip()).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value.strip()

    def alert_channels(self) -> dict[Channel, SecretStr]:
        """The configured webhooks, by channel."""
        urls = {Channel.SLACK: self.slack_webhook_url, Channel.TEAMS: self.teams_webhook_url}
        return {channel: url for channel, url in urls.items() if url is not None}

    def alert_policy(self) -> AlertPolicy:
        return AlertPolicy(
            group_wait=timedelta(seconds=self.alert_group_wait_seconds),
            group_interval=timedelta(seconds=self.alert_group_interval_seconds),
        )

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            spacing=self.alert_send_interval_seconds,
            retry_base=min(self.alert_retry_base_seconds, self.alert_retry_max_seconds),
            retry_cap=self.alert_retry_max_seconds,
        )

    @model_validator(mode="after")
    def _private_server_needs_a_token(self) -> Settings:
        address = self.http_address()
        if address is not None and not is_loopback(address[0]) and self.http_token is None:
            raise ValueError(
                "SELFHEAL_HTTP_TOKEN: required when SELFHEAL_HTTP_ADDR is not a loopback address"
            )
        return self

    def http_address(self) -> tuple[str, int] | None:
        """(host, port) of the HTTP server; None when it is off."""
        return parse_address(self.http_addr) if self.http_addr else None

    def dashboard_link(self) -> str | None:
        """Where alerts link: SELFHEAL_DASHBOARD_URL, else this daemon's page when its
        server has an address a person can open."""
        address = self.http_address()
        if self.dashboard_url is not None or address is None:
            return self.dashboard_url
        host, port = address
        if host in ("0.0.0.0", "::"):  # noqa: S104 - every interface: no one address to link
            return None
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def llm_off_reason(self) -> str | None:
        """Why the daemon never asks the LLM (None: it asks)."""
        if not self.use_llm:
            return "SELFHEAL_USE_LLM is not true"
        if self.openai_api_key is None:
            return "OPENAI_API_KEY is not set"
        if self.llm_max_calls_per_hour == 0:
            return "SELFHEAL_LLM_MAX_CALLS_PER_HOUR is 0"
        return None

    def advice_policy(self) -> AdvicePolicy | None:
        """When to ask the LLM; None when it is never asked."""
        if self.llm_off_reason() is not None:
            return None
        return AdvicePolicy(min_confidence=self.llm_min_confidence)

    def thresholds(self) -> Thresholds:
        """The one Thresholds of the daemon: it serves the count and the decision."""
        return Thresholds(
            auth_consecutive=self.disable_auth_after,
            network_window=timedelta(minutes=self.network_window_minutes),
            network_failures=self.disable_network_after,
            data_consecutive=self.disable_data_after,
            unknown_consecutive=self.disable_unknown_after,
        )

    def circuit_policy(self) -> CircuitPolicy:
        return CircuitPolicy(
            open_after=self.circuit_open_after,
            probe_base=min(self.circuit_probe_base_seconds, self.circuit_probe_max_seconds),
            probe_cap=self.circuit_probe_max_seconds,
            count_every=self.circuit_count_interval_seconds,
        )

    @property
    def is_development(self) -> bool:
        return self.environment.strip().lower() in {"development", "dev"}


def load_settings(**overrides: object) -> Settings:
    """Load settings; turn a validation error into one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = _env_name(error["loc"])
        # Not chained: the validation error holds the input, and a webhook URL is a secret.
        message = error["msg"].removeprefix("Value error, ")  # pydantic's, for our own checks
        if not error["loc"]:  # a check across settings: its message names the variable
            raise ConfigError(f"invalid configuration: {message}") from None
        raise ConfigError(f"invalid configuration: {name}: {message}") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(value: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464' (IPv6 in brackets), or ':9464' (every IPv4
    interface) as (host, port)."""
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if (
        not sep
        or not (port.isascii() and port.isdigit() and int(port) <= 65535)
        or (":" in host and not bracketed)
        or (not bracketed and ("[" in host or "]" in host))
    ):
        raise ValueError("must be host:port, such as 127.0.0.1:9464 or [::1]:9464")
    host = host[1:-1] if bracketed else host
    return host or "0.0.0.0", int(port)  # noqa: S104 - every interface, as asked


def webhook_url_problem(url: str, *, teams: bool) -> str | None:
    """What is wrong with a webhook URL, in words that do not repeat it (None: nothing)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        return "must be an http(s) URL"
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
        return "must be an http(s) URL"
    host = parts.hostname.lower()
    retired = host.endswith(".webhook.office.com") or (
        host == "outlook.office.com" and parts.path.startswith("/webhook")
    )
    if teams and retired:
        return (
            "an Office 365 connector URL, which Microsoft retired: create a Workflows webhook "
            "in Teams (Post to a channel when a webhook request is received) and use its URL"
        )
    return None


def _env_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    if field.isupper():
        return field
    return "SELFHEAL_" + field.upper()
