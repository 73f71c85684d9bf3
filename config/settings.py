"""The one Settings object of the platform.

Built once at each entry point (``cachectl``, celeryconfig.py, the API's app factory, a test
fixture) with :func:`load_settings`, frozen, and passed explicitly. Values come from the
environment and from a ``.env`` file in the working directory; the environment wins.

Every default is documented where it is defined, with the reason.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ConfigError(Exception):
    """A setting is missing or invalid. The message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    # --- Redis: the variables of the design, with its defaults -------------------------------
    redis_host: str = "localhost"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_password: SecretStr = SecretStr("")
    redis_db: NonNegativeInt = 0
    redis_key_prefix: str = Field("membership:", min_length=1, max_length=64)
    redis_default_ttl: PositiveInt = 1800

    # --- Cache behaviour: the design's TTLs per data type (seconds) ---------------------------
    cache_enabled: bool = True
    cache_analytics_ttl: PositiveInt = 3600  # dashboards tolerate an hour of lag
    cache_statistics_ttl: PositiveInt = 1800  # demographics move slowly
    cache_member_ttl: PositiveInt = 900  # write-through keeps members fresh; TTL bounds drift
    cache_lookup_ttl: PositiveInt = 86400  # tiers, statuses, countries change rarely

    # --- Redis beyond the design's variables ---------------------------------------------------
    # A full URL overrides host/port/db/password; rediss:// turns TLS on.
    redis_url: str | None = None
    redis_username: str | None = None  # ACL user; None means the default user
    # Sentinel: "host:port,host:port"; when set, the master is discovered through them.
    redis_sentinels: str = ""
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: SecretStr = SecretStr("")
    redis_read_from_replica: bool = False  # reads may lag the master by replication delay
    # Cluster: "host:port,host:port" startup nodes; when set, the cache runs on Redis Cluster.
    redis_cluster_nodes: str = ""
    redis_tls: bool = False
    redis_tls_ca_file: str | None = None
    redis_tls_cert_file: str | None = None
    redis_tls_key_file: str | None = None
    # Short timeouts: a cache that waits longer than the database it shields is useless.
    redis_socket_timeout: PositiveFloat = 0.25
    redis_connect_timeout: PositiveFloat = 0.25
    redis_max_connections: PositiveInt = 64

    # --- Cache core tuning ---------------------------------------------------------------------
    cache_compress_threshold: NonNegativeInt = 4096  # below this zstd saves too little to pay
    cache_ttl_jitter: float = Field(0.10, ge=0, lt=1)  # +-10% so co-warmed keys spread out
    cache_stale_ratio: float = Field(0.5, ge=0)  # hard TTL = soft TTL * (1 + ratio): stale window
    cache_negative_ttl: PositiveInt = 30  # "not found" is cached briefly
    cache_lease_ms: PositiveInt = 5000  # one loader per key; others wait up to this long
    cache_xfetch_beta: float = Field(1.0, ge=0)  # 0 turns early refresh off
    cache_breaker_failures: PositiveInt = 3  # consecutive failures that open the breaker
    cache_breaker_reset_seconds: PositiveFloat = 2.0  # open this long before one trial call
    # The near tier (cache/near.py): hot entries in process memory, no round trip, kept exact
    # by Redis invalidation pushes (cache/tracking.py). On by default: a hit costs ~1 us
    # instead of a ~100 us round trip, and a stale read is prevented, not tolerated. Off with
    # CACHE_ENABLED=false too; off by itself on Cluster and with reads from replicas.
    cache_near_enabled: bool = True
    # Bytes of decoded entries per process (estimated, overhead included): 64 MiB holds
    # ~10,000 member records, the hot set of a Zipf-read table, in a fraction of a worker's RSS.
    cache_near_max_bytes: PositiveInt = 64 * 1024 * 1024

    # --- Automatic warm-up and refresh-ahead (tasks/autowarm.py, tasks/refresh.py) ----------
    # On by default: a cold cache after a worker start, a `clear`, a Redis restart or a
    # failover sends the first readers to the database all at once; the critical warm-up
    # (seconds) avoids that with no command typed.
    cache_autowarm: bool = True
    # The warm-up lease (one warm-up at a time across workers) lapses after this long
    # without renewal; renewed every batch, so it only matters when a worker dies mid-run.
    cache_autowarm_lease_s: PositiveInt = 60
    # Members warmed by the automatic warm-up: the hottest by recent activity.
    cache_autowarm_hottest: NonNegativeInt = 1_000
    # Refresh-ahead: entries of the hot set are re-read this long before their soft expiry;
    # at least twice the job's beat interval (workers.routing.REFRESH_SECONDS) so one missed
    # tick still refreshes in time.
    cache_refresh_ahead: bool = True
    cache_refresh_lead_s: PositiveFloat = 90.0
    # How many hot candidates the job tracks (and reads PTTL of) per run: the hot 1% of a
    # 100k-member cache; each costs a few bytes of a pipeline, none a query.
    cache_refresh_hot_size: PositiveInt = 1_000
    # Cache keys examined per run to find new hot members (an incremental SCAN).
    cache_refresh_scan_budget: PositiveInt = 2_000

    # --- The consistency monitor (cache/consistency.py, tasks/consistency.py) ---------------
    # Share of acknowledged member writes sampled: each sampled write costs one pipelined
    # Redis step at the write and one check per window; 1% of a busy API is thousands a day.
    consistency_sample_rate: float = Field(0.01, ge=0, le=1)
    # Seconds after the acknowledgement at which each sample's cached copies are compared
    # with the database: "consistent within 1 s / 10 s / 60 s".
    consistency_windows_s: str = "1,10,60"
    # Pending checks kept per window (oldest dropped, and counted, beyond it): the monitor's
    # memory is bounded whatever the write rate.
    consistency_max_samples: PositiveInt = 10_000
    # Checks per run (one run a second): bounds the monitor's database and Redis work.
    consistency_max_checks: PositiveInt = 500
    # Members sampled from one bulk write (an import of 100,000 rows adds at most this many).
    consistency_max_per_write: PositiveInt = 20
    # The API the monitor asks as a reader would (its near tier and HTTP layer); empty: the
    # Redis copies only.
    consistency_probe_url: str = ""

    # --- Database and broker --------------------------------------------------------------------
    # Empty means: the local PostgreSQL when it answers, else a SQLite file (embedded default).
    database_url: str = ""
    celery_broker_url: str | None = None  # default: the cache's Redis, database 1
    celery_result_backend: str | None = None  # default: the cache's Redis, database 2
    # Seconds before the Redis broker redelivers a task whose worker died without acking.
    # None: derived from the longest task time limit (celeryconfig.py). Tests shorten it.
    celery_visibility_timeout: PositiveInt | None = None

    # --- Processes --------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(5000, ge=1, le=65535)  # the design's port
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_user: str = "admin"
    flower_password: SecretStr = SecretStr("")  # empty: generated at start-up and printed once

    # --- Backups (the daily maintenance job and `cachectl backup`) --------------------------------
    backup_dir: str = "var/backups"  # where copies are kept; relative to the working directory
    # Where this process can read the Redis nodes' dump.rdb files ("path,path": the data
    # volumes mounted read-only). Empty: ask the server (CONFIG GET dir), which needs a user
    # allowed CONFIG; production's worker user is not.
    redis_dump_files: str = ""

    # --- Alerts to a webhook, for installations without Alertmanager (tasks/alerts.py) ----------
    # Where every maintenance report alert and security event is POSTed as JSON
    # (workers/alerts.py has the schema). Empty: off, nothing is sent or queued. A secret:
    # chat webhooks carry their credential in the path, so `cachectl config` masks it.
    alert_webhook_url: SecretStr = SecretStr("")
    alert_webhook_timeout_s: PositiveFloat = 5.0  # one POST; a receiver slower than this is down
    # Retries on connection errors, 408, 429 and 5xx: full jitter under 1 s, 2 s, 4 s ... capped
    # at a minute (workers/routing.py); 8 of them cover about four minutes of outage. Then the
    # alert is dead-lettered (a Redis list) and logged.
    alert_webhook_max_retries: NonNegativeInt = 8
    alert_webhook_backoff_s: PositiveFloat = 1.0  # the first retry's ceiling; doubles each time
    # A burst of refused tokens (401, or 403 for a known token) on the management API from one
    # client address or token label: this many within the window is one security event.
    management_refusal_threshold: PositiveInt = 20
    management_refusal_window_s: PositiveInt = 60

    # --- Write-behind (member activity: Redis now, PostgreSQL in batches) ------------------------
    writebehind_max_backlog: PositiveInt = 500_000  # ~40 MB of stream before writers get 503
    writebehind_batch_size: PositiveInt = 2_000  # events per upsert: few commits, short locks
    writebehind_linger_ms: NonNegativeInt = 50  # a small batch waits this long to grow
    writebehind_block_ms: PositiveInt = 100  # idle wait for entries; below the socket timeout
    writebehind_claim_idle_ms: PositiveInt = 60_000  # a silent holder is dead after this
    writebehind_counter_ttl_s: PositiveInt = 8 * 86_400  # outlives the oldest accepted day
    writebehind_max_event_age_s: PositiveInt = 7 * 86_400  # older events are refused
    writebehind_max_future_s: NonNegativeInt = 300  # clock skew tolerated from clients
    # Streams by member id % N, each with its own offset: N flushers can run side by side.
    writebehind_partitions: int = Field(1, ge=1, le=64)
    # Replicas that must confirm an event (WAIT) before the API says "accepted": 1 in
    # production, where a failover would otherwise lose what the replica had not received.
    writebehind_replicas: NonNegativeInt = 0
    writebehind_replica_timeout_ms: PositiveInt = 100  # below redis_socket_timeout

    # --- Management API (/api/v1/cache) ---------------------------------------------------------
    # "role:sha256hex[:label],..." with role viewer | operator | admin; only hashes are stored.
    # Empty: nobody is let in. Hash a token with `cachectl hash-token`.
    management_tokens: SecretStr = SecretStr("")
    management_rate_limit: PositiveInt = 120  # requests per window per token
    management_rate_window_s: PositiveInt = 60
    management_max_body_bytes: PositiveInt = 262_144
    management_check_timeout_s: PositiveFloat = 2.0  # each health check's budget
    management_ping_timeout_s: PositiveFloat = 1.0  # celery inspect ping
    management_beat_max_age_s: PositiveInt = 180  # beat is dead after this long without a tick
    management_health_window_s: PositiveInt = 600  # the window /health judges rates over
    management_max_error_rate: float = Field(0.05, ge=0, le=1)
    management_min_hit_rate: float = Field(0.5, ge=0, le=1)  # hit-rate floor of /health
    management_min_lookups: NonNegativeInt = 100  # below this, hit and error rates are noise
    management_max_memory_ratio: float = Field(0.95, gt=0, le=1)
    management_max_writebehind_lag_s: PositiveFloat = 60
    management_max_replica_lag_s: PositiveFloat = 10
    management_expected_replicas: NonNegativeInt = 0
    management_clear_batch: PositiveInt = 1000  # keys per SCAN + UNLINK step

    environment: Literal["development", "test", "production"] = "development"

    @model_validator(mode="after")
    def _authenticated_outside_development(self) -> Settings:
        # An open Redis holds the members' data and the task queue: refuse to run production
        # without a password (requirepass or an ACL user) on the cache.
        if self.environment == "production" and not (
            self.redis_password.get_secret_value() or "@" in (self.redis_url or "")
        ):
            raise ValueError("production needs REDIS_PASSWORD (requirepass or an ACL user)")
        return self

    @model_validator(mode="after")
    def _block_below_socket_timeout(self) -> Settings:
        # A blocking XREADGROUP longer than the socket timeout would look like a dead Redis.
        if self.writebehind_block_ms >= self.redis_socket_timeout * 1000:
            raise ValueError("writebehind_block_ms must be below redis_socket_timeout (in ms)")
        # WAIT blocks the connection for up to its timeout: longer would look like a dead Redis.
        if self.writebehind_replica_timeout_ms >= self.redis_socket_timeout * 1000:
            raise ValueError(
                "writebehind_replica_timeout_ms must be below redis_socket_timeout (in ms)"
            )
        if self.writebehind_replicas and self.redis_mode == "cluster":
            raise ValueError("writebehind_replicas needs a standalone or Sentinel master")
        return self

    @field_validator("redis_key_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if any(ch in value for ch in "*?[]{} \t\r\n"):
            raise ValueError("must not contain glob characters, braces or whitespace")
        return value

    @field_validator("redis_sentinels", "redis_cluster_nodes")
    @classmethod
    def _host_list(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {item!r}")
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # Not the value itself: it may carry the webhook's credential.
                raise ValueError("must be empty (off) or an http:// or https:// URL with a host")
        return SecretStr(url)

    @field_validator("consistency_windows_s")
    @classmethod
    def _windows(cls, value: str) -> str:
        try:
            windows = [float(part) for part in value.split(",")]
        except ValueError:
            raise ValueError("a comma-separated list of seconds, e.g. 1,10,60") from None
        if not windows or any(w <= 0 for w in windows) or windows != sorted(set(windows)):
            raise ValueError("positive seconds in increasing order, e.g. 1,10,60")
        return value

    @property
    def consistency_windows(self) -> tuple[float, ...]:
        return tuple(float(part) for part in self.consistency_windows_s.split(","))

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    # --- Derived values -------------------------------------------------------------------------
    @staticmethod
    def _parse_hosts(value: str) -> list[tuple[str, int]]:
        hosts = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            host, _, port = item.rpartition(":")
            hosts.append((host, int(port)))
        return hosts

    @cached_property
    def dump_files(self) -> list[Path]:
        return [Path(part.strip()) for part in self.redis_dump_files.split(",") if part.strip()]

    @cached_property
    def sentinel_hosts(self) -> list[tuple[str, int]]:
        return self._parse_hosts(self.redis_sentinels)

    @cached_property
    def cluster_nodes(self) -> list[tuple[str, int]]:
        return self._parse_hosts(self.redis_cluster_nodes)

    @property
    def redis_mode(self) -> Literal["standalone", "sentinel", "cluster"]:
        if self.cluster_nodes:
            return "cluster"
        if self.sentinel_hosts:
            return "sentinel"
        return "standalone"

    @property
    def uses_tls(self) -> bool:
        return self.redis_tls or (self.redis_url or "").startswith("rediss://")

    def redis_url_for(self, db: int | None = None) -> str:
        """The Redis URL of the standalone server, with the password, for one database."""
        if self.redis_url and db is None:
            return self.redis_url
        scheme = "rediss" if self.uses_tls else "redis"
        auth = ""
        password = self.redis_password.get_secret_value()
        if password or self.redis_username:
            auth = f"{quote(self.redis_username or '', safe='')}:{quote(password, safe='')}@"
        host, port = self.redis_host, self.redis_port
        if self.redis_url:
            parts = urlsplit(self.redis_url)
            host, port = parts.hostname or host, parts.port or port
        return f"{scheme}://{auth}{host}:{port}/{self.redis_db if db is None else db}"

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url_for(db=1)

    @property
    def result_backend(self) -> str:
        return self.celery_result_backend or self.redis_url_for(db=2)

    def masked(self) -> dict[str, object]:
        """The effective configuration with every secret masked, for display."""
        shown: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                shown[name] = "********" if value.get_secret_value() else ""
            elif isinstance(value, str) and "://" in value:
                shown[name] = mask_url(value)
            else:
                shown[name] = value
        shown["redis_mode"] = self.redis_mode
        return shown


def mask_url(url: str) -> str:
    """Hide the password of a URL: redis://user:secret@host -> redis://user:****@host."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return parts._replace(netloc=netloc).geturl()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else _named_in(str(first["msg"]))
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    if "password" in field or field == "alert_webhook_url":
        shown = ""
    return f"invalid setting {field.upper()}: {first['msg']}{shown}"


def _named_in(message: str) -> str:
    """The variable a cross-field rule names in its message (they start with it)."""
    for word in message.replace(",", " ").split():
        if word.isupper() or word.lower() in Settings.model_fields:
            return word
    return "settings"


def load_settings(**overrides: object) -> Settings:
    """Build the Settings, or raise ConfigError with one line naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
