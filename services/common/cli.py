"""`python -m services.<name> [serve | replay [--from-snapshot]]`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TypeVar

import typer
from fastapi import APIRouter

from services.common.replay import replay
from services.common.runtime import Kernel, Service, serve
from services.common.settings import Settings

S = TypeVar("S", bound=Service)


def main(
    service: str,
    default_port: int,
    build: Callable[[Kernel], S],
    router: Callable[[S], APIRouter],
    serving: Callable[[Kernel], S] | None = None,
) -> None:
    """`serving`: what serve builds when it is more than `build` (background work that
    replay, which only rebuilds state, must never start)."""
    title = f"tonne {service}"
    served = serving or build
    cli = typer.Typer(add_completion=False, help=title)

    @cli.callback(invoke_without_command=True)
    def default(context: typer.Context) -> None:
        """Without a command: serve."""
        if context.invoked_subcommand is None:
            serve(service, default_port, served, router, title)

    @cli.command("serve")
    def serve_command() -> None:
        """Run the HTTP API, the consumer and the outbox relay."""
        serve(service, default_port, served, router, title)

    @cli.command("replay")
    def replay_command(
        from_snapshot: bool = typer.Option(False, "--from-snapshot", help="aggregates from their latest snapshot"),
    ) -> None:
        """Rebuild every projection from the event table into fresh tables; print the state hash."""
        settings = Settings.from_env(service, default_port)
        state = asyncio.run(replay(settings, build, "snapshot" if from_snapshot else "zero"))
        typer.echo(json.dumps(state.as_dict()))

    cli()
