"""The one Settings object of the platform.

Built once at each entry point (``cachectl``, celeryconfig.py, the API's app factory, a test
fixture) with :func:`load_settings`, frozen, and passed explicitly. Values come from the
environment and from a ``.env`` file in the working directory; the environment wins.

Every default is documented where it is defined, with the reason.
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config import urls
from config.redis_role import Mode, RedisRole, RoleName, check_host_list
from config.tls import RedisTls
from config.tokens import parse_tokens
from config.urls import mask_url

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


DURABLE_PREFIX = "durable_redis_"  # DURABLE_REDIS_HOST is durable_redis.host


class ConfigError(Exception):
    """A setting is missing or invalid. The message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
        # DURABLE_REDIS_HOST -> durable_redis.host: the role's group is read whole after
        # its prefix (one split), so DURABLE_REDIS_SENTINEL_MASTER is sentinel_master.
        env_nested_delimiter="_",
        env_nested_max_split=1,
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
    # The Sentinels' ACL user (Redis 6.2+); None: their default user (requirepass). A named
    # user can hold two passwords, which `cachectl rotate sentinel` needs for no downtime.
    redis_sentinel_username: str | None = None
    redis_read_from_replica: bool = False  # reads may lag the master by replication delay
    # Cluster: "host:port,host:port" startup nodes; when set, the cache runs on Redis Cluster.
    redis_cluster_nodes: str = ""
    # TLS towards Redis and the Sentinels (config/tls.py): one group for every connection.
    # Also on with a rediss:// REDIS_URL. The CA signs the servers' certificates (empty: the
    # system's CAs); the client certificate and key go together, for servers that ask.
    redis_tls: bool = False
    redis_tls_ca_file: str | None = None
    redis_tls_cert_file: str | None = None
    redis_tls_key_file: str | None = None
    # Short timeouts: a cache that waits longer than the database it shields is useless.
    # The durable role (config/redis_role.py): DURABLE_REDIS_HOST, _PORT, _DB, _PASSWORD,
    # _USERNAME, _URL, _SENTINELS, _SENTINEL_MASTER, _SENTINEL_PASSWORD, _TLS... Unset: the
    # durable role is the cache role above (one Redis for a single-node install).
    durable_redis: RedisRole | None = None
    # Timeouts and pool size apply to both roles.
    redis_socket_timeout: PositiveFloat = 0.25
    redis_connect_timeout: PositiveFloat = 0.25
    redis_max_connections: PositiveInt = 64

    # --- Cache core tuning ---------------------------------------------------------------------
    cache_compress_threshold: NonNegativeInt = 4096  # below this zstd saves too little to pay
    cache_ttl_jitter: float = Field(0.10, ge=0, lt=1)  # +-10% so co-warmed keys spread out
    cache_stale_ratio: float = Field(0.5, ge=0)  # hard TTL = soft TTL * (1 + ratio): stale window
    cache_negative_ttl: PositiveInt = 30  # "not found" is cached briefly
    # Caps the lag each tagged kind declares (cache.kinds: Kind.lag): how long after a change
    # its last value may still be served while one recompute runs. 0: every read after a
    # change waits for the recompute (read-after-write on reports and lists, at their cost).
    cache_max_lag_seconds: float = Field(60.0, ge=0)
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
    # What the automatic warm-up after a `clear` fills. "all": every member too (the chunked
    # warm-up: ~20 s for 1,000,000 members on two cores), as the cache held before the clear;
    # the hottest members by activity are not the members read most, and each one missed is
    # a database transaction and a slow read. "critical": the warm-up above only, for tables
    # too large to refill.
    cache_autowarm_after_clear: Literal["critical", "all"] = "all"
    # The share of wall time the automatic warm-up of every member (after a `clear`) keeps
    # each worker process busy: after each page it rests the page's time (1/duty - 1) times
    # over, so the readers it runs beside keep their CPU. At 1,000,000 members on two cores,
    # unpaced (1.0) it took both cores for 11 s, and a member missed meanwhile took 21 ms
    # (p50) instead of 2.4 ms (bench.replay). At 0.25 the member route's p99 outside the
    # failover was 14 ms, at 0.1 9.4 to 10.5 ms: the readers missing after a clear are
    # served faster than the warm-up would reach them. An operator's warm-up is not paced.
    cache_autowarm_duty: Annotated[float, Field(gt=0, le=1)] = 0.1
    # Members per chunk task when every member is warmed (tasks/chunks.py): a warm-up of more
    # is a chord of chunks over id ranges that all worker processes share. 50,000 members are
    # ~0.3 s of work: enough chunks to keep every process busy to the end, few enough that
    # each task's overhead (a message, a result, a progress write) stays below 1%.
    cache_warmup_chunk_size: PositiveInt = 50_000
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
    # The niceness `cachectl up` runs the worker at (nice(1), 0-19): on one machine the
    # warm-ups, flushes and jobs yield the CPU to the API's requests instead of queueing them.
    worker_nice: int = Field(10, ge=0, le=19)
    api_host: str = "127.0.0.1"
    api_port: int = Field(5000, ge=1, le=65535)  # the design's port
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_user: str = "admin"
    flower_password: SecretStr = SecretStr("")  # empty: generated at start-up and printed once
    # During a rotation (`cachectl rotate flower`): the old password, still accepted beside
    # FLOWER_PASSWORD until the clients have moved; empty otherwise.
    flower_previous_password: SecretStr = SecretStr("")

    # --- Backups (the daily maintenance job and `cachectl backup`) --------------------------------
    backup_dir: str = "var/backups"  # where copies are kept; relative to the working directory
    # Where this process can read the Redis nodes' dump.rdb files ("path,path": the data
    # volumes mounted read-only). Empty: ask the server (CONFIG GET dir), which needs a user
    # allowed CONFIG; production's worker user is not.
    redis_dump_files: str = ""
    # A second directory every copy and its manifest also go to (another disk, a mounted remote
    # volume), so losing the backup volume with the Redis host loses no copy. Empty: none.
    backup_copy_dir: str = ""

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
    # How long an activity POST's Idempotency-Key is remembered: a retry within it is answered
    # the first answer and counts nothing again. A day covers a client's retries across an
    # outage, a deploy and a night; ~150 B of Redis per key (no TTL past it).
    activity_idempotency_window_s: PositiveInt = 86_400

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
    # Keys per step of a clear, one script inside Redis: every other command waits for it
    # (api_stub.management.config).
    management_clear_batch: PositiveInt = 250
    # The share of time a clear's steps keep Redis busy (api_stub.management.config); 1.0:
    # one step after another.
    management_clear_duty: float = Field(0.5, gt=0, le=1)

    environment: Literal["development", "test", "production"] = "development"

    @model_validator(mode="before")
    @classmethod
    def _durable_group(cls, data: object) -> object:
        # load_settings(durable_redis_host=...) reads as DURABLE_REDIS_HOST does: callers
        # that pass variables by name (tests, harnesses) need not know the group nests.
        if isinstance(data, dict):
            flat = {
                name[len(DURABLE_PREFIX) :]: data.pop(name)
                for name in [n for n in data if n.lower().startswith(DURABLE_PREFIX)]
            }
            if flat:
                group = data.get("durable_redis")
                data["durable_redis"] = (dict(group) if isinstance(group, dict) else {}) | flat
        return data

    @model_validator(mode="after")
    def _authenticated_outside_development(self) -> Settings:
        # An open Redis holds the members' data and the task queue: refuse to run production
        # without a password (requirepass or an ACL user) on the cache.
        if self.environment != "production":
            return self
        if not self.redis_role("cache").authenticated:
            raise ValueError("production needs REDIS_PASSWORD (requirepass or an ACL user)")
        if not self.redis_role("durable").authenticated:
            raise ValueError("production needs DURABLE_REDIS_PASSWORD (requirepass or an ACL user)")
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
        if self.writebehind_replicas and self.redis_role("durable").mode == "cluster":
            raise ValueError("writebehind_replicas needs a standalone or Sentinel master")
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        # A missing file would only fail at the first connection, as a Redis outage.
        for name in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file"):
            path = getattr(self, name)
            if path and not (Path(path).is_file() and os.access(path, os.R_OK)):
                raise ValueError(f"{name.upper()} is not a readable file: {path}")
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            raise ValueError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together")
        return self

    @model_validator(mode="after")
    def _durable_has_one_master(self) -> Settings:
        # The broker, the write-behind's WAIT and the leases need one master (a Cluster
        # shards them); only the cache role may be a Cluster.
        if self.durable_redis is not None and self.durable_redis.mode == "cluster":
            raise ValueError(
                "DURABLE_REDIS_CLUSTER_NODES must be empty: the durable role is standalone"
                " or Sentinel"
            )
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
        return check_host_list(value)

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
    def _redis_url(cls, value: str | None) -> str | None:
        return urls.check_redis_url(value) if value else value

    @field_validator("management_tokens")
    @classmethod
    def _token_entries(cls, value: SecretStr) -> SecretStr:
        parse_tokens(value.get_secret_value())  # the management API's grammar (config.tokens)
        return value

    @field_validator("celery_broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        return urls.check_broker_url(value) if value else value

    @field_validator("celery_result_backend")
    @classmethod
    def _backend_url(cls, value: str | None) -> str | None:
        return urls.check_backend_url(value) if value else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return urls.check_database_url(value) if value else value

    @model_validator(mode="after")
    def _flower_login(self) -> Settings:
        # Flower splits FLOWER_BASIC_AUTH on commas (several users) and a user on ':'.
        if "," in self.flower_user or ":" in self.flower_user or not self.flower_user:
            raise ValueError("FLOWER_USER must be non-empty, without ',' or ':'")
        if "," in self.flower_password.get_secret_value():
            raise ValueError("FLOWER_PASSWORD must not contain ','")
        if "," in self.flower_previous_password.get_secret_value():
            raise ValueError("FLOWER_PREVIOUS_PASSWORD must not contain ','")
        return self

    # --- Derived values -------------------------------------------------------------------------
    @cached_property
    def copy_dir(self) -> Path | None:
        return Path(self.backup_copy_dir) if self.backup_copy_dir else None

    @cached_property
    def dump_files(self) -> list[Path]:
        return [Path(part.strip()) for part in self.redis_dump_files.split(",") if part.strip()]

    @cached_property
    def _cache_role(self) -> RedisRole:
        # The design's REDIS_* variables are the cache role: field x is redis_x.
        return RedisRole(
            **{name: getattr(self, f"redis_{name}") for name in RedisRole.model_fields}
        )

    def redis_role(self, role: RoleName) -> RedisRole:
        """Where a role's Redis is: the durable role falls back to the cache role's."""
        if role == "durable" and self.durable_redis is not None:
            return self.durable_redis
        return self._cache_role

    @property
    def durable_is_cache(self) -> bool:
        """True when both roles are one Redis (no DURABLE_REDIS_* given, or the same)."""
        return self.redis_role("durable") == self._cache_role

    @property
    def sentinel_hosts(self) -> list[tuple[str, int]]:
        return self._cache_role.sentinel_hosts

    @property
    def cluster_nodes(self) -> list[tuple[str, int]]:
        return self._cache_role.cluster_hosts

    @property
    def redis_mode(self) -> Mode:
        return self._cache_role.mode

    @property
    def uses_tls(self) -> bool:
        return self._cache_role.uses_tls

    @property
    def redis_tls_options(self) -> RedisTls:
        """The cache role's REDIS_TLS_* group as one object (config/tls.py)."""
        return self._cache_role.tls_options

    def redis_url_for(self, db: int | None = None) -> str:
        """The cache role's URL (standalone server, with the password) for one database."""
        return self._cache_role.url_for(db)

    def masked(self) -> dict[str, object]:
        """The effective configuration with every secret masked, for display."""
        shown = {name: _masked(value) for name, value in self.model_dump().items()}
        shown["redis_mode"] = self.redis_mode
        shown["durable_redis_mode"] = self.redis_role("durable").mode
        return shown


def _masked(value: object) -> object:
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else ""
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    if isinstance(value, dict):  # a role's group
        return {name: _masked(item) for name, item in value.items()}
    return value


def _secret(field: str) -> bool:
    info = Settings.model_fields.get(field)
    return info is not None and info.annotation is SecretStr


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    # A role's group nests: ("durable_redis", "port") is DURABLE_REDIS_PORT.
    loc = "_".join(str(part) for part in first["loc"])
    field = loc or _named_in(str(first["msg"]))
    value = first.get("input")
    shown = ""
    if isinstance(value, str) and not _secret(field.lower()):
        # A URL's password never reaches a terminal or a log.
        shown = f" (got {(mask_url(value) if '://' in value else value)!r})"
    elif value is not None and not isinstance(value, dict | str) and not _secret(field.lower()):
        shown = f" (got {value!r})"
    message = str(first["msg"]).replace("\n", " ")
    return f"invalid setting {field.upper()}: {message}{shown}"


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


def load_settings_or_exit(**overrides: object) -> Settings:
    """load_settings for an entry point (API, worker, beat, Flower, cachectl): a bad setting
    prints its one line on stderr and exits with code 2, no traceback."""
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)  # one plain line, never wrapped
        raise SystemExit(2) from None
