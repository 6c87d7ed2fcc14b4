"""`rapport keys create|list|revoke`: the API keys of touchpoint systems."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError

from api.cli.common import console
from api.settings import Settings
from feature_store.credentials import DuplicateKeyName, KeyName, Scope, issue_key
from feature_store.factory import open_credentials

keys = typer.Typer(
    help="API keys of touchpoint systems (the store comes from RAPPORT_STORE).",
    no_args_is_help=True,
)


@keys.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who uses the key, e.g. atm-fleet.")],
    scopes: Annotated[
        str,
        typer.Option(help=f"Comma-separated, from: {', '.join(Scope)}. admin grants all."),
    ],
) -> None:
    """Create a key and print it once, alone on the last line. Only its hash is stored."""
    _check_name(name)
    wanted = _parse_scopes(scopes)
    try:
        key = create_key(Settings().store, name, wanted)
    except DuplicateKeyName as exc:
        console().print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(1) from None
    console().print(
        f"Created the key [bold]{name}[/] with the scopes {', '.join(sorted(wanted))}. "
        "Store it now: it cannot be shown again.",
        highlight=False,
    )
    typer.echo(key)


@keys.command("list")
def keys_list() -> None:
    """Every key, revoked ones included (never the keys or their hashes)."""
    from rich.table import Table

    with closing(open_credentials(Settings().store)) as credentials:
        records = credentials.list_keys()
    table = Table(title=f"API keys ({len(records)})")
    table.add_column("key_id", no_wrap=True)
    table.add_column("name")
    table.add_column("scopes")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("revoked (UTC)", no_wrap=True)
    for record in records:
        table.add_row(
            record.key_id,
            record.name,
            ", ".join(sorted(record.scopes)),
            _minutes(record.created_at),
            "" if record.revoked_at is None else _minutes(record.revoked_at),
        )
    console().print(table)


@keys.command("revoke")
def keys_revoke(
    key_id_or_name: Annotated[str, typer.Argument(help="The key_id or the name of a key.")],
) -> None:
    """Revoke a key. Running APIs refuse it within about RAPPORT_AUTH_REVOCATION_POLL_SECONDS."""
    settings = Settings()
    with closing(open_credentials(settings.store)) as credentials:
        revoked = credentials.revoke(key_id_or_name, at=datetime.now(UTC))
    if not revoked:
        console().print(f"[red]No active key has the id or name {key_id_or_name!r}.[/]")
        raise typer.Exit(1)
    bound, setting = (
        (settings.auth_revocation_poll_seconds, "RAPPORT_AUTH_REVOCATION_POLL_SECONDS")
        if settings.auth_revocation_poll_seconds > 0
        else (settings.auth_cache_seconds, "RAPPORT_AUTH_CACHE_SECONDS")
    )
    console().print(
        f"Revoked {key_id_or_name!r}. Running APIs refuse it within about {bound:g} s ({setting}).",
        highlight=False,
    )


def create_key(store_url: str, name: str, scopes: list[Scope]) -> str:
    """Issue a key, store its record, and return the key (the only time it exists)."""
    key, record = issue_key(name, scopes, at=datetime.now(UTC))
    with closing(open_credentials(store_url)) as credentials:
        credentials.save(record)
    return key


def _parse_scopes(text: str) -> list[Scope]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {scope.value for scope in Scope}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown scope {', '.join(unknown)!s}; choose from {', '.join(Scope)}"
            if unknown
            else f"give at least one of {', '.join(Scope)}",
            param_hint="--scopes",
        )
    return sorted({Scope(name) for name in names})


def _minutes(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _check_name(name: str) -> None:
    try:
        TypeAdapter(KeyName).validate_python(name)
    except ValidationError:
        raise typer.BadParameter(
            "1 to 64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
            param_hint="--name",
        ) from None
