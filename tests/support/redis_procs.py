"""Start and stop real ``redis-server`` processes for fault tests.

Everything listens on 127.0.0.1 only, on ports chosen by :func:`free_port` (never 6379).
Every process gets its own temporary directory (config file, log file, RDB/AOF files),
runs in the foreground as a child of the test process and is killed again by
``close()`` / the context manager, by an ``atexit`` hook, and (on Linux, when started
from the main thread) by ``PR_SET_PDEATHSIG`` if the test process dies hard.

Ports are reserved across processes (pytest-xdist workers) with lock files in
``$TMPDIR/redis-procs-ports-$UID``, so parallel workers never pick the same port;
a reservation of port P also covers its cluster bus port P+10000.

Typical use::

    with start_redis(appendonly=True, appendfsync="always") as proc:
        client = proc.client()
        ...
        proc.kill()
        proc.restart()
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "HOST",
    "RedisCluster",
    "RedisProcError",
    "RedisProcess",
    "TlsFiles",
    "free_port",
    "make_tls_files",
    "start_cluster",
    "start_redis",
    "start_replica",
    "start_sentinels",
    "wait_for",
]

HOST = "127.0.0.1"
REDIS_SERVER = os.environ.get("REDIS_PROCS_SERVER", "redis-server")
REDIS_CLI = os.environ.get("REDIS_PROCS_CLI", "redis-cli")
START_TIMEOUT = 10.0
CLUSTER_BUS_OFFSET = 10000
FORBIDDEN_PORTS = frozenset({6379})
LOG_NAME = "redis.log"

T = TypeVar("T")


class RedisProcError(RuntimeError):
    """A redis-server / sentinel / cluster could not be started or did not become ready."""


# --------------------------------------------------------------------------- waiting


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Redis errors and ``OSError`` raised by the predicate count as "not yet". ``message`` may
    be a function: what it says is read at the timeout (e.g. the failures seen by then).
    Raises :class:`TimeoutError` (mentioning the last such error) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
        except (redis.RedisError, OSError) as exc:
            last_exc = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc is not None else ""
            what = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


# --------------------------------------------------------------------------- ports

_lock = threading.RLock()
_RESERVATION_DIR = Path(tempfile.gettempdir()) / f"redis-procs-ports-{os.getuid()}"
_reserved: set[int] = set()  # port numbers (incl. bus ports) reserved by this process


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(number: int) -> bool:
    """Create the lock file for one port number; reclaim it if its owner is dead."""
    _RESERVATION_DIR.mkdir(mode=0o700, exist_ok=True)
    path = _RESERVATION_DIR / str(number)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            try:
                text = path.read_text()
                age = time.time() - path.stat().st_mtime
            except OSError:
                continue  # vanished meanwhile: try again
            owner = int(text) if text.strip().isdigit() else 0
            stale = (owner > 0 and not _pid_alive(owner)) or (owner == 0 and age > 60)
            if stale:
                path.unlink(missing_ok=True)
                continue
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        _reserved.add(number)
        return True
    return False


def _unclaim(number: int) -> None:
    if number in _reserved:
        _reserved.discard(number)
        (_RESERVATION_DIR / str(number)).unlink(missing_ok=True)


def _reserve(port: int) -> bool:
    """Reserve ``port`` and its cluster bus port for this process (cross-process)."""
    with _lock:
        if port in _reserved:
            return True
        if not _claim(port):
            return False
        bus = port + CLUSTER_BUS_OFFSET
        if bus <= 65535 and not _claim(bus):
            _unclaim(port)
            return False
        return True


def _release(port: int) -> None:
    with _lock:
        _unclaim(port)
        _unclaim(port + CLUSTER_BUS_OFFSET)


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """Return a free loopback port P (with P+10000 free too), reserved for this process.

    The reservation is released when the :class:`RedisProcess` using the port is closed
    (or at interpreter exit).
    """
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        bus = port + CLUSTER_BUS_OFFSET
        if port in FORBIDDEN_PORTS or bus > 65535 or not _can_bind(bus):
            continue
        if _reserve(port):
            return port
    raise RedisProcError("could not find a free port pair (P, P+10000) on 127.0.0.1")


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away CA, a server certificate and a client certificate."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path  # SAN: DNS:localhost, IP:127.0.0.1
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def under(cls, directory: Path) -> TlsFiles:
        """The files by their names in ``directory``: the names :func:`make_tls_files` and
        the deploy script's TLS step both write."""
        return cls(
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            server_cert=directory / "server.crt",
            server_key=directory / "server.key",
            client_cert=directory / "client.crt",
            client_key=directory / "client.key",
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` to connect with the client certificate."""
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca_cert),
            "ssl_certfile": str(self.client_cert),
            "ssl_keyfile": str(self.client_key),
        }

    def server_directives(self) -> list[tuple[str, str]]:
        """``redis.conf`` lines configuring these certificates (without the ports)."""
        return [
            ("tls-cert-file", _quote(self.server_cert)),
            ("tls-key-file", _quote(self.server_key)),
            ("tls-client-cert-file", _quote(self.client_cert)),
            ("tls-client-key-file", _quote(self.client_key)),
            ("tls-ca-cert-file", _quote(self.ca_cert)),
            ("tls-auth-clients", "yes"),
            ("tls-replication", "yes"),
            ("tls-cluster", "yes"),
        ]


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = redis-procs-test-ca
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


def _run_openssl(args: list[str], cwd: Path) -> None:
    res = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if res.returncode != 0:
        raise RedisProcError(f"openssl {' '.join(args)} failed:\n{res.stdout}{res.stderr}")


def _make_tls_openssl(files: TlsFiles) -> None:
    directory = files.ca_cert.parent
    cnf = directory / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run_openssl(
        ["req", "-config", str(cnf), "-x509", "-new", *newkey, "-sha256", "-days", "3650",
         "-extensions", "v3_ca", "-keyout", str(files.ca_key), "-out", str(files.ca_cert)],
        directory,
    )  # fmt: skip
    for cert, key, cn, section in (
        (files.server_cert, files.server_key, "localhost", "server"),
        (files.client_cert, files.client_key, "redis-procs-client", "client"),
    ):
        csr = cert.with_suffix(".csr")
        _run_openssl(
            ["req", "-config", str(cnf), "-new", *newkey, "-subj", f"/CN={cn}",
             "-keyout", str(key), "-out", str(csr)],
            directory,
        )  # fmt: skip
        _run_openssl(
            ["x509", "-req", "-in", str(csr), "-CA", str(files.ca_cert),
             "-CAkey", str(files.ca_key), "-set_serial", f"0x{secrets.token_hex(16)}",
             "-sha256", "-days", "3650", "-extfile", str(cnf), "-extensions", section,
             "-out", str(cert)],
            directory,
        )  # fmt: skip
        csr.unlink()


def _make_tls_cryptography(files: TlsFiles) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("redis-procs-test-ca")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_key(ca_key, files.ca_key)
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    leaf_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    for cert_path, key_path, cn, eku, server in (
        (files.server_cert, files.server_key, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, True),
        (files.client_cert, files.client_key, "redis-procs-client",
         ExtendedKeyUsageOID.CLIENT_AUTH, False),
    ):  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(leaf_usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if server:
            san = x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            )
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        write_key(key, key_path)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_tls_files(
    directory: Path | str,
    *,
    backend: Literal["auto", "cryptography", "openssl"] = "auto",
) -> TlsFiles:
    """Generate a CA, a server cert (localhost/127.0.0.1) and a client cert in ``directory``.

    Uses the ``cryptography`` package when importable, else the ``openssl`` command line.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles.under(directory)
    if backend == "auto":
        has_crypto = importlib.util.find_spec("cryptography") is not None
        backend = "cryptography" if has_crypto else "openssl"
    if backend == "cryptography":
        _make_tls_cryptography(files)
    elif shutil.which("openssl") is None:
        raise RedisProcError("make_tls_files needs the cryptography package or openssl")
    else:
        _make_tls_openssl(files)
    return files


# --------------------------------------------------------------------------- processes


def _quote(value: object) -> str:
    """Quote a value (typically a path) for redis.conf."""
    text = str(value)
    if text and not any(ch in text for ch in " \t\"'\\"):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _render(directives: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{key} {value}\n" for key, value in directives)


if sys.platform == "linux":
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
else:  # pragma: no cover
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """``preexec_fn`` that makes the child get SIGKILL when its parent dies."""

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # parent already gone
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


_live: dict[int, RedisProcess] = {}  # id(proc) -> proc, not yet closed


@dataclass(eq=False)
class RedisProcess:
    """One ``redis-server`` (or Sentinel) child process with its own directory."""

    port: int
    dir: Path
    conf: Path
    sentinel: bool = False
    password: str | None = None
    tls: TlsFiles | None = None
    reserved: bool = False  # the port reservation is ours to release
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    # ---- properties
    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RedisProcError("process was never started")
        return self._popen.pid

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (``rediss://`` with TLS); the password is not included."""
        return f"{'rediss' if self.tls else 'redis'}://{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / LOG_NAME

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def returncode(self) -> int | None:
        """Exit status of the last run (None while running or never started)."""
        return None if self._popen is None else self._popen.poll()

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # ---- clients
    def client(self, **kwargs: Any) -> redis.Redis:
        """A ``redis.Redis`` for this process (password and TLS preset); caller closes it."""
        options: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "password": self.password,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
        }
        if self.tls is not None:
            options.update(self.tls.client_kwargs())
        options.update(kwargs)
        return redis.Redis(**options)

    def _probe_client(self) -> redis.Redis:
        return self.client(
            socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
        )

    def info(self, section: str | None = None) -> dict[str, Any]:
        client = self._probe_client()
        try:
            result = client.info(section) if section else client.info()
        finally:
            client.close()
        if not isinstance(result, dict):
            raise RedisProcError(f"unexpected INFO reply: {result!r}")
        return result

    def ping(self) -> bool:
        """True when the server answers PING (and is not loading its dataset)."""
        client = self._probe_client()
        try:
            client.ping()
            if not self.sentinel:
                loading = client.info("persistence")
                if isinstance(loading, dict) and int(loading.get("loading", 0)) != 0:
                    return False
            return True
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
            return True  # it answers; we just may not use it without credentials
        finally:
            client.close()

    # ---- lifecycle
    def _spawn(self) -> None:
        if self._closed:
            raise RedisProcError(f"{self!r} is closed")
        if self.running():
            raise RedisProcError(f"redis on port {self.port} is already running")
        argv = [REDIS_SERVER, str(self.conf)]
        if self.sentinel:
            argv.append("--sentinel")
        preexec = None
        if _LIBC is not None and threading.current_thread() is threading.main_thread():
            preexec = _die_with_parent(os.getpid())
        with open(self.log, "ab") as log:
            log.write(f"---- redis_procs: starting {' '.join(argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_exc: BaseException | None = None
        while True:
            popen = self._popen
            if popen is None or popen.poll() is not None:
                code = None if popen is None else popen.returncode
                raise RedisProcError(
                    f"redis-server on port {self.port} exited with {code} during startup;"
                    f" log tail:\n{self.log_tail()}"
                )
            try:
                if self.ping():
                    return
            except (redis.RedisError, OSError) as exc:
                last_exc = exc
            if time.monotonic() >= deadline:
                raise RedisProcError(
                    f"redis-server on port {self.port} did not answer PING within {timeout}s"
                    f" (last error: {last_exc!r}); log tail:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the process (by pid) and reap it. No-op when not running."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGKILL)
        popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful shutdown), wait up to ``timeout`` seconds, then SIGKILL."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Start again on the same port with the same directory and config file.

        Stops the process first if it is still running; AOF/RDB files in ``dir`` are reused.
        """
        self.stop()
        self._spawn()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def close(self) -> None:
        """Kill the process, delete its directory and release its port. Idempotent."""
        if self._closed:
            return
        try:
            self.kill()
        finally:
            self._closed = True
            with _lock:
                _live.pop(id(self), None)
            if self.reserved:
                _release(self.port)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _cleanup_all() -> None:
    with _lock:
        procs = list(_live.values())
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.close()
    with _lock:
        for number in list(_reserved):
            _unclaim(number)


atexit.register(_cleanup_all)


def _launch(
    *,
    port: int | None,
    render: Callable[[int, Path], str],
    sentinel: bool = False,
    password: str | None = None,
    tls: TlsFiles | None = None,
    timeout: float = START_TIMEOUT,
) -> RedisProcess:
    """Create dir + config, start the process and wait for PING.

    With an automatically chosen port, retries on a fresh port when the bind fails.
    """
    if port is not None and port in FORBIDDEN_PORTS:
        raise ValueError(f"port {port} is reserved for the shared Redis; never use it")
    attempts = 5 if port is None else 1
    for attempt in range(attempts):
        if port is None:
            chosen, reserved = free_port(), True
        else:
            chosen, reserved = port, _reserve(port)
        directory = Path(tempfile.mkdtemp(prefix=f"redis-procs-{chosen}-")).resolve()
        conf = directory / ("sentinel.conf" if sentinel else "redis.conf")
        conf.write_text(render(chosen, directory))
        proc = RedisProcess(
            port=chosen,
            dir=directory,
            conf=conf,
            sentinel=sentinel,
            password=password,
            tls=tls,
            reserved=reserved,
        )
        with _lock:
            _live[id(proc)] = proc
        try:
            proc._spawn()
            proc._wait_ready(timeout)
        except RedisProcError as exc:
            in_use = "Address already in use" in str(exc)
            proc.close()
            if in_use and attempt + 1 < attempts:
                continue
            raise
        except BaseException:
            proc.close()
            raise
        return proc
    raise AssertionError("unreachable")


def _listen_directives(
    port: int, directory: Path, tls: TlsFiles | None, *, certificates: bool = True
) -> list[tuple[str, str]]:
    """bind/port/dir overrides; with ``tls`` the port is the TLS port, and ``certificates``
    False keeps the certificate directives of a config file that names its own."""
    lines = [("bind", HOST)]
    if tls is None:
        lines.append(("port", str(port)))
    else:
        lines += [("port", "0"), ("tls-port", str(port))]
        if certificates:
            lines += tls.server_directives()
    lines += [("dir", _quote(directory)), ("daemonize", "no"), ("logfile", '""')]
    return lines


def start_redis(
    *,
    port: int | None = None,
    appendonly: bool = False,
    appendfsync: str = "everysec",
    save: str | None = None,
    maxmemory: str | int | None = None,
    maxmemory_policy: str | None = None,
    requirepass: str | None = None,
    aclfile: Path | str | None = None,
    replicaof: tuple[str, int] | None = None,
    extra: Mapping[str, str] | None = None,
    tls: TlsFiles | None = None,
    config_file: Path | None = None,
    tls_in_config: bool = False,
    timeout: float = START_TIMEOUT,
) -> RedisProcess:
    """Start a ``redis-server`` on 127.0.0.1 and wait until it answers PING.

    Without ``config_file`` a config is written with ``save ""`` and ``appendonly no``
    unless asked otherwise. With ``config_file`` its content is copied and followed by
    the options given here that differ from the defaults, then by the ``bind``/``port``/
    ``dir``/``daemonize``/``logfile`` overrides. ``save`` is the raw value, e.g. ``"900 1"``.
    ``extra`` values are written verbatim (use ``'""'`` for an empty string).
    With ``tls`` the server listens with ``tls-port`` on the port and has ``port 0``;
    ``tls_in_config`` leaves the certificate directives to ``config_file`` (``tls`` then only
    tells the clients of the process which files to use).
    """
    if replicaof is not None and replicaof[1] in FORBIDDEN_PORTS:
        raise ValueError("refusing to replicate from the shared Redis on port 6379")
    base = config_file.read_text() if config_file is not None else None

    options: list[tuple[str, str]] = []
    if base is None or save is not None:
        options.append(("save", save if save else '""'))
    if base is None or appendonly:
        options.append(("appendonly", "yes" if appendonly else "no"))
    if appendonly or appendfsync != "everysec":
        options.append(("appendfsync", appendfsync))
    if base is None:
        # a replica must not wait 5 s for more replicas before a diskless full sync
        options.append(("repl-diskless-sync-delay", "0"))
    if maxmemory is not None:
        options.append(("maxmemory", str(maxmemory)))
    if maxmemory_policy is not None:
        options.append(("maxmemory-policy", maxmemory_policy))
    if requirepass is not None:
        options.append(("requirepass", _quote(requirepass)))
    if aclfile is not None:
        options.append(("aclfile", _quote(Path(aclfile).resolve())))
    if replicaof is not None:
        options.append(("replicaof", f"{replicaof[0]} {int(replicaof[1])}"))
    options += list((extra or {}).items())

    def render(chosen: int, directory: Path) -> str:
        head = ""
        if base is not None:
            head = base if base.endswith("\n") else base + "\n"
            head += "# ---- overrides appended by tests/support/redis_procs.py\n"
        listen = _listen_directives(chosen, directory, tls, certificates=not tls_in_config)
        return head + _render(options) + _render(listen)

    return _launch(port=port, render=render, password=requirepass, tls=tls, timeout=timeout)


def _replication_up(proc: RedisProcess) -> bool:
    return proc.info("replication").get("master_link_status") == "up"


def start_replica(
    master: RedisProcess,
    *,
    extra: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
) -> RedisProcess:
    """Start a replica of ``master`` (same password/TLS) and wait for master_link_status:up."""
    options = dict(extra or {})
    if master.password is not None:
        options.setdefault("masterauth", _quote(master.password))
    replica = start_redis(
        replicaof=(HOST, master.port),
        requirepass=master.password,
        tls=master.tls,
        extra=options,
        timeout=timeout,
    )
    try:
        wait_for(
            lambda: _replication_up(replica),
            timeout,
            message=f"replica {replica.port} to sync from master {master.port}",
        )
    except BaseException:
        replica.close()
        raise
    return replica


# --------------------------------------------------------------------------- Sentinel


def _as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _command(client: redis.Redis, *args: str) -> Any:
    """``client.execute_command`` (untyped in redis-py) with a typed signature."""
    execute: Callable[..., Any] = client.execute_command
    return execute(*args)


def sentinel_master_addr(sentinel: RedisProcess, master_name: str) -> tuple[str, int] | None:
    """``SENTINEL get-master-addr-by-name`` as ``(host, port)``, or None if unknown."""
    client = sentinel._probe_client()
    try:
        reply = _command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name)
    finally:
        client.close()
    if isinstance(reply, (list, tuple)) and len(reply) == 2:
        return (_as_text(reply[0]), int(_as_text(reply[1])))
    return None


def _sentinel_count(sentinel: RedisProcess, sub: str, master_name: str) -> int:
    client = sentinel._probe_client()
    try:
        reply = _command(client, "SENTINEL", sub, master_name)
    finally:
        client.close()
    return len(reply) if isinstance(reply, list) else 0


def start_sentinels(
    master: RedisProcess,
    *,
    count: int = 3,
    master_name: str = "mymaster",
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
    timeout: float = 15.0,
) -> list[RedisProcess]:
    """Start ``count`` Sentinels monitoring ``master`` (each with its own writable config).

    Returns once every Sentinel reports the master, knows the other Sentinels and knows
    the master's currently connected replicas, so a failover can start right away.
    """
    tls = master.tls

    def render(chosen: int, directory: Path) -> str:
        lines = _listen_directives(chosen, directory, tls)
        lines += [
            ("sentinel monitor", f"{master_name} {HOST} {master.port} {quorum}"),
            ("sentinel down-after-milliseconds", f"{master_name} {down_after_ms}"),
            ("sentinel failover-timeout", f"{master_name} {failover_timeout_ms}"),
            ("sentinel parallel-syncs", f"{master_name} 1"),
        ]
        if master.password is not None:
            lines.append(("sentinel auth-pass", f"{master_name} {_quote(master.password)}"))
        return _render(lines)

    sentinels: list[RedisProcess] = []
    try:
        for _ in range(count):
            sentinels.append(_launch(port=None, render=render, sentinel=True, tls=tls))
        replicas = int(master.info("replication").get("connected_slaves", 0))

        def ready() -> bool:
            return all(
                sentinel_master_addr(s, master_name) == master.address
                and _sentinel_count(s, "SENTINELS", master_name) >= count - 1
                and _sentinel_count(s, "REPLICAS", master_name) >= replicas
                for s in sentinels
            )

        wait_for(ready, timeout, 0.1, message=f"{count} sentinels to agree on {master_name}")
    except BaseException:
        for s in sentinels:
            s.close()
        raise
    return sentinels


# --------------------------------------------------------------------------- Cluster


@dataclass(eq=False)
class RedisCluster:
    """The node processes of a Redis Cluster created with ``redis-cli --cluster create``."""

    nodes: list[RedisProcess]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A ``redis.cluster.RedisCluster`` client for this cluster; caller closes it."""
        make_node: Callable[[str, int], redis.cluster.ClusterNode] = redis.cluster.ClusterNode
        nodes = [make_node(host, port) for host, port in self.startup_nodes]
        options: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
        options.update(kwargs)
        return redis.cluster.RedisCluster(startup_nodes=nodes, **options)

    def stop(self) -> None:
        """Kill every node and delete its directory. Idempotent."""
        for node in self.nodes:
            node.close()

    close = stop

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _cluster_node_ready(node: RedisProcess, total: int) -> bool:
    client = node._probe_client()
    try:
        raw = _command(client, "CLUSTER", "INFO")
    finally:
        client.close()
    text = _as_text(raw)
    fields = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
    if fields.get("cluster_state") != "ok" or int(fields.get("cluster_known_nodes", 0)) != total:
        return False
    replication = node.info("replication")
    return replication.get("role") == "master" or replication.get("master_link_status") == "up"


def start_cluster(
    masters: int = 3,
    replicas_per_master: int = 1,
    *,
    node_timeout_ms: int = 2000,
    extra: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> RedisCluster:
    """Start ``masters * (1 + replicas_per_master)`` nodes and join them into a cluster.

    Returns once every node reports ``cluster_state:ok``, knows all nodes and every
    replica's link to its master is up.
    """
    if masters < 3:
        raise ValueError("redis-cli --cluster create needs at least 3 masters")
    total = masters * (1 + replicas_per_master)
    options = {
        "cluster-enabled": "yes",
        "cluster-config-file": "nodes.conf",
        "cluster-node-timeout": str(node_timeout_ms),
        **(extra or {}),
    }
    cluster = RedisCluster(nodes=[])
    try:
        for _ in range(total):
            cluster.nodes.append(start_redis(extra=options))
        argv = [
            REDIS_CLI,
            "--cluster",
            "create",
            *(f"{host}:{port}" for host, port in cluster.startup_nodes),
            "--cluster-replicas",
            str(replicas_per_master),
            "--cluster-yes",
        ]
        res = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if res.returncode != 0:
            raise RedisProcError(f"{' '.join(argv)} failed:\n{res.stdout}{res.stderr}")
        wait_for(
            lambda: all(_cluster_node_ready(n, total) for n in cluster.nodes),
            timeout,
            0.1,
            message="cluster_state:ok on every node",
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster
