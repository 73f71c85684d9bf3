"""TLS towards Redis and its Sentinels: one small group of settings, read by every client.

``RedisTls`` is what the ``REDIS_TLS_*`` settings say (Settings.redis_tls_options builds it):
whether to speak TLS, the CA that signs the servers' certificates, and the client certificate
and key presented to servers that ask for one. It renders itself for each library that connects,
so the file names and the verification policy are decided here once:

- ``redis_kwargs()``: redis-py's ``ssl_*`` keywords (the cache clients, the Sentinel clients);
- ``celery_ssl()``: Celery's ``broker_use_ssl`` and ``redis_backend_use_ssl`` dict.

Verification is always on (certificate chain and host name): a TLS connection that accepts any
certificate only hides the traffic from someone who is not trying.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RedisTls:
    """TLS options of the Redis connections; ``enabled`` False means plain TCP."""

    enabled: bool = False
    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # presented when the server asks (tls-auth-clients)
    key_file: str | None = None

    def redis_kwargs(self) -> dict[str, Any]:
        """redis-py keywords for a Redis, Sentinel or Cluster connection; empty without TLS."""
        if not self.enabled:
            return {}
        return {
            "ssl": True,
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
        }

    def celery_ssl(self) -> dict[str, Any] | None:
        """``broker_use_ssl`` / ``redis_backend_use_ssl`` for Celery's Redis transport.

        The four keys the kombu and Celery Redis code pass on to redis-py's SSL connection;
        None without TLS (the settings are then left out).
        """
        if not self.enabled:
            return None
        return {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
        }
