"""cachectl commands that talk to the management API (/api/v1/cache, api_stub.management).

Each command is one or two HTTP calls with a bearer token (``--token`` or CACHECTL_TOKEN) to
``--api`` (default http://127.0.0.1:<API_PORT>); for that local API with no token given and no
MANAGEMENT_TOKENS configured, the token ``cachectl up`` keeps in var/ (cachectl/localtoken.py).
The API does the work, checks the input and
records the action in its audit trail. Output is a rich table, or the API's JSON with
``--json``. Exit codes::

    0  ok
    1  unhealthy, failed, the API unreachable or answering 5xx/429
    2  usage: bad arguments, the API refusing the input (400/422), or the token (401/403)
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from cachectl import localtoken
from config import load_settings_or_exit

PREFIX: Final = "/api/v1/cache"
TOKEN_ENV: Final = "CACHECTL_TOKEN"  # noqa: S105 - the variable's name
TIMEOUT_S: Final = 30.0

console = Console()
err = Console(stderr=True)

ApiOption = Annotated[
    str | None, typer.Option("--api", help="API base URL. Default: http://127.0.0.1:API_PORT.")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar=TOKEN_ENV, show_envvar=True, help="Bearer token."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]


def _fail(code: int, message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)  # one plain line, never wrapped
    raise typer.Exit(code)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    # A problem document (RFC 9457): detail, and on a 422 the refused fields in errors.
    detail = body.get("detail", body) if isinstance(body, dict) else body
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
            for item in errors
            if isinstance(item, dict)
        )
    return detail if isinstance(detail, str) else json.dumps(detail)


class Api:
    """The management API at ``base`` with ``token``; failures become exits with a message."""

    def __init__(self, base: str | None, token: str | None) -> None:
        self.token_file: str | None = None  # where the token came from, when from a file
        if base is None:
            settings = load_settings_or_exit()
            base = f"http://127.0.0.1:{settings.api_port}"
            if not token and not settings.management_tokens.get_secret_value():
                token = localtoken.read()  # the local stack's (cachectl up)
                self.token_file = str(localtoken.path()) if token else None
        if not token:
            _fail(2, f"no token: pass --token or set {TOKEN_ENV}")
        self.base = base.rstrip("/")
        self.client = httpx.Client(
            base_url=self.base + PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
        )

    def call(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200, 202), **kwargs: Any
    ) -> httpx.Response:
        """The answer when its status is in ``ok``; otherwise exit 1 or 2 with the reason."""
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            _fail(1, f"cannot connect to the API at {self.base}: {exc} (is `cachectl up` running?)")
        except httpx.TimeoutException:
            _fail(1, f"the API at {self.base} did not answer within {TIMEOUT_S:.0f} s")
        except httpx.HTTPError as exc:
            _fail(1, f"talking to the API at {self.base} failed: {exc}")
        status = response.status_code
        if status in ok:
            return response
        if status == 401:
            source = self.token_file or f"--token / {TOKEN_ENV}"
            _fail(2, f"the API refused the token (401): check {source}")
        if status == 403:
            _fail(2, f"the token's role may not do this (403): {_detail(response)}")
        if status in (400, 404, 422):
            _fail(2, f"the API refused the request ({status}): {_detail(response)}")
        _fail(1, f"the API answered {status}: {_detail(response)}")

    def close(self) -> None:
        self.client.close()


def _with_api(base: str | None, token: str | None, work: Callable[[Api], None]) -> None:
    api = Api(base, token)
    try:
        work(api)
    finally:
        api.close()


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=str))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, Mapping | list):
        return json.dumps(value, default=str)
    return str(value)


def _pairs(title: str, values: Mapping[str, Any]) -> Table:
    table = Table("name", "value", title=title)
    for name, value in values.items():
        table.add_row(name, _cell(value))
    return table


# --- observing ----------------------------------------------------------------------------------
def health(api: ApiOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Health of Redis, workers, beat, write-behind and the database; exit 1 when failing."""

    def work(client: Api) -> None:
        answer = client.call("GET", "/health", ok=(200, 503)).json()
        if as_json:
            _print_json(answer)
        else:
            table = Table("check", "ok", "details", title=f"health: {answer.get('status')}")
            for name, result in (answer.get("checks") or {}).items():
                ok = bool(result.get("ok"))
                details = {k: v for k, v in result.items() if k != "ok"}
                mark = "[green]yes[/green]" if ok else "[red]NO[/red]"
                table.add_row(name, mark, _cell(details))
            console.print(table)
        if answer.get("status") != "ok":
            err.print(f"[red]unhealthy[/red]: {', '.join(answer.get('failing') or [])}")
            raise typer.Exit(1)

    _with_api(api, token, work)


def metrics(api: ApiOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Hit rates per data type, Redis memory, write-behind backlog and lag."""

    def work(client: Api) -> None:
        answer = client.call("GET", "/metrics").json()
        if as_json:
            _print_json(answer)
            return
        overall = answer.get("overall") or {}
        table = Table("data type", "hits", "misses", "errors", "hit rate", title="cache (overall)")
        rows = dict(overall.get("by_type") or {})
        rows["total"] = overall.get("total") or {}
        for name, values in rows.items():
            table.add_row(
                name,
                _cell(values.get("hits")),
                _cell(values.get("misses")),
                _cell(values.get("errors")),
                _cell(values.get("hit_rate")),
            )
        console.print(table)
        redis_keys = ["up", "used_memory", "maxmemory", "memory_ratio", "maxmemory_policy"]
        redis_keys += ["evicted_keys", "connected_clients", "role"]
        redis_figures = answer.get("redis") or {}
        console.print(_pairs("redis", {k: redis_figures.get(k) for k in redis_keys}))
        console.print(_pairs("write-behind", answer.get("writebehind") or {}))

    _with_api(api, token, work)


def reports(
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    job: Annotated[str | None, typer.Option(help="Only this job's reports.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 20,
) -> None:
    """The maintenance reports, newest first."""
    params: dict[str, Any] = {"limit": limit} | ({"job": job} if job else {})

    def work(client: Api) -> None:
        answer = client.call("GET", "/reports", params=params).json()
        if as_json:
            _print_json(answer)
            return
        found = answer.get("reports") or []
        table = Table("id", "job", "period", "created", "alerts", title=f"{len(found)} reports")
        for report in found:
            alerts = report.get("alerts")
            table.add_row(
                _cell(report.get("id")),
                _cell(report.get("job")),
                _cell(report.get("period")),
                _cell(report.get("created_at")),
                _cell(len(alerts) if isinstance(alerts, list) else alerts),
            )
        console.print(table)

    _with_api(api, token, work)


def dead_letters(
    action: Annotated[str, typer.Argument(help="list or replay")] = "list",
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids to replay.")] = None,
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    count: Annotated[int, typer.Option(min=1, max=1000, help="List at most this many.")] = 100,
    after: Annotated[str, typer.Option(help="List after this dead-letter id.")] = "-",
) -> None:
    """List the write-behind events that could not be written, or replay some by id."""
    if action not in ("list", "replay"):
        _fail(2, f"unknown action {action!r}: list or replay")
    if action == "list" and ids:
        _fail(2, "list takes no ids (did you mean replay?)")
    if action == "replay" and not ids:
        _fail(2, "replay needs the dead-letter ids (see `cachectl dead-letters list`)")

    def work(client: Api) -> None:
        if action == "replay":
            answer = client.call("POST", "/dead-letters/replay", json={"ids": ids}).json()
            if as_json:
                _print_json(answer)
            else:
                console.print(
                    f"replayed {answer['replayed']} of {answer['requested']} dead letters"
                )
            if answer["replayed"] < answer["requested"]:
                raise typer.Exit(1)
            return
        params = {"count": count, "after": after}
        answer = client.call("GET", "/dead-letters", params=params).json()
        if as_json:
            _print_json(answer)
            return
        letters = answer.get("dead_letters") or []
        table = Table("dead id", "fields", title=f"{len(letters)} dead letters")
        for letter in letters:
            table.add_row(
                str(letter.get("dead_id")),
                _cell({k: v for k, v in letter.items() if k != "dead_id"}),
            )
        console.print(table)

    _with_api(api, token, work)


# --- acting -------------------------------------------------------------------------------------
def clear(
    pattern: Annotated[str, typer.Argument(help="Glob under the key prefix, e.g. member:*")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count the keys.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete the cache keys matching PATTERN (admin): counts them first, then asks."""

    def work(client: Api) -> None:
        params = {"pattern": pattern, "dry_run": "true"}
        counted = client.call("DELETE", "/clear", params=params).json()
        if dry_run:
            if as_json:
                _print_json(counted)
            else:
                console.print(f"{counted['matched']:,} keys match {pattern!r} (dry run)")
            return
        if not as_json:
            console.print(f"{counted['matched']:,} keys match {pattern!r}")
        if not yes and not typer.confirm(f"delete the keys matching {pattern!r}?", err=True):
            err.print("aborted: nothing deleted")
            raise typer.Exit(1)
        params["dry_run"] = "false"
        cleared = client.call("DELETE", "/clear", params=params).json()
        if as_json:
            _print_json(cleared)
        else:
            console.print(
                f"deleted {cleared['deleted']:,} keys matching {pattern!r} "
                f"in {cleared['seconds']:.2f} s"
            )

    _with_api(api, token, work)


def invalidate(
    member: Annotated[
        list[int] | None, typer.Option("--member", help="A member id (repeatable).")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")] = None,
    data_type: Annotated[str | None, typer.Option("--data-type", help="A data type.")] = None,
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Invalidate by member ids, tags or a whole data type (operator); exactly one of them."""
    body: dict[str, Any] = {}
    if member:
        body["member_ids"] = member
    if tag:
        body["tags"] = tag
    if data_type is not None:
        body["data_type"] = data_type
    if len(body) != 1:
        _fail(2, "give exactly one of --member, --tag, --data-type")

    def work(client: Api) -> None:
        answer = client.call("POST", "/invalidation/trigger", json=body).json()
        if as_json:
            _print_json(answer)
        else:
            console.print(_pairs(f"invalidation by {answer.get('accepted')}", answer))

    _with_api(api, token, work)


def hash_token() -> None:
    """Print the SHA-256 of a token read from stdin, for MANAGEMENT_TOKENS (role:digest:label)."""
    token = sys.stdin.read().strip()
    if not token:
        _fail(2, 'no token on stdin (e.g. `printf %s "$TOKEN" | cachectl hash-token`)')
    # The same digest as api_stub.management.auth.hash_token, without importing the API.
    print(hashlib.sha256(token.encode()).hexdigest())


def rotate_password(
    user: Annotated[str, typer.Argument(help="The ACL user whose password changes.")],
    nodes: Annotated[list[str], typer.Argument(help="redis[s]://host:port of every node.")],
    admin_user: Annotated[str, typer.Option(help="ACL admin user.")] = "admin",
    grace_s: Annotated[
        float, typer.Option(min=0, help="Seconds the clients have to move to the new password.")
    ] = 60.0,
) -> None:
    """Rotate USER's Redis ACL password on every node without downtime.

    Reads REDIS_ADMIN_PASSWORD, REDIS_OLD_PASSWORD and REDIS_NEW_PASSWORD from the environment.
    """
    from cachectl.rotate import RotationError, command

    try:
        command(user, nodes, admin_user=admin_user, grace_s=grace_s)
    except RotationError as exc:
        _fail(1, f"rotation failed: {exc}")
    console.print(f"[green]rotated[/green] {user}'s password on {len(nodes)} node(s)")


def register(app: typer.Typer) -> None:
    """Add the commands to cachectl's app."""
    app.command()(health)
    app.command()(metrics)
    app.command()(clear)
    app.command()(invalidate)
    app.command()(reports)
    app.command("dead-letters")(dead_letters)
    app.command("hash-token")(hash_token)
    app.command("rotate-password")(rotate_password)


__all__ = ["TOKEN_ENV", "Api", "register"]
