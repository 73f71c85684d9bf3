"""``cachectl tokens add|revoke|list``: management tokens without a restart, through the
management API (admin token; see api_stub/management/tokens.py), which audits each change.

A token is rotated by adding its successor, moving the clients to it, then revoking it::

    cachectl tokens add ci-2 --role operator      # prints the new token once
    cachectl tokens revoke ci-1
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cachectl.remote import Api, ApiOption, JsonOption, TokenOption, _print_json, _with_api, console

app = typer.Typer(help="Management tokens: add, revoke, list (no restart).", no_args_is_help=True)

LabelArgument = Annotated[str, typer.Argument(help="The token's label (its name in the audit).")]


@app.command("add")
def add(
    label: LabelArgument,
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")] = "viewer",
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a token; it works at once on every API process. Printed once, never stored."""

    def work(client: Api) -> None:
        answer = client.call("POST", "/tokens", json={"role": role, "label": label}, ok=(201,))
        if as_json:
            _print_json(answer.json())
            return
        body = answer.json()
        console.print(f"added {body['label']} ({body['role']}); the token, shown this once:")
        print(body["token"])

    _with_api(api, token, work)


@app.command("revoke")
def revoke(
    label: LabelArgument,
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token (bootstrap or added); refused at once on every API process."""

    def work(client: Api) -> None:
        answer = client.call("DELETE", f"/tokens/{label}").json()
        if as_json:
            _print_json(answer)
        else:
            console.print(f"revoked {answer['label']} ({answer['role']}) at {answer['revoked_at']}")

    _with_api(api, token, work)


@app.command("list")
def list_tokens(
    api: ApiOption = None, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """Every token by label: role, bootstrap or added, when added and revoked."""

    def work(client: Api) -> None:
        answer = client.call("GET", "/tokens").json()
        if as_json:
            _print_json(answer)
            return
        table = Table("label", "role", "source", "added", "by", "revoked", title="tokens")
        for item in answer["tokens"]:
            table.add_row(
                item["label"],
                item["role"],
                item["source"],
                str(item.get("added_at") or ""),
                str(item.get("added_by") or ""),
                str(item.get("revoked_at") or ""),
            )
        console.print(table)

    _with_api(api, token, work)
