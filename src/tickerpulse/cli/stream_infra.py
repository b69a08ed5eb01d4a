"""`tickerpulse stream infra up|down|status`: Kafka + Elasticsearch (noida-db) and optionally a second Kafka
broker (Tansu) on 127.0.0.1, in the background, for trying the distributed pipeline on one machine.

Attached to the `stream` command group (registered by cli/stream.py, which sorts first); if that group is
missing, it becomes the top-level verb `infra`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

infra_app = typer.Typer(help="Local Kafka + Elasticsearch (noida-db) and Tansu for try-outs.", no_args_is_help=True)
console = Console()
DIR = typer.Option(None, "--dir", help="Where servers keep data, logs and pids [<TICKERPULSE_HOME>/infra].")


def _dir(d: Path | None) -> Path:
    from tickerpulse.paths import home

    return d or home() / "infra"


@infra_app.command("up")
def up(
    dir: Path | None = DIR,
    kafka_port: int = typer.Option(9092, "--kafka-port", help="Kafka port of noida-db."),
    es_port: int = typer.Option(9200, "--es-port", help="Elasticsearch port of noida-db."),
    tansu_port: int | None = typer.Option(None, "--tansu-port", help="Also start Tansu (memory-only Kafka) on this port."),
    foreground: bool = typer.Option(False, "--foreground", help="Stay attached; Ctrl-C stops the servers."),
) -> None:
    """Start the servers in the background (data kept in --dir across restarts) and print how to use them."""
    import time

    from tickerpulse.stream import infra

    d = _dir(dir)
    try:
        servers = infra.up(d, kafka_port=kafka_port, es_port=es_port, tansu_port=tansu_port)
    except infra.InfraError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    noida = servers[0]
    console.print(f"noida-db (pid {noida.pid}): Kafka {noida.kafka}, Elasticsearch {noida.es_url}; data in {d}")
    for s in servers[1:]:
        console.print(f"tansu (pid {s.pid}): Kafka {s.kafka} (memory only)")
    console.print("try: tickerpulse stream run --bus kafka --store elasticsearch --scorer vader "
                  f"--set kafka_bootstrap={noida.kafka} --set es_url={noida.es_url}", highlight=False)
    if not foreground:
        console.print("stop with: tickerpulse stream infra down" + (f" --dir {dir}" if dir else ""))
        return
    try:
        while all(s.alive() for s in servers):
            time.sleep(0.5)
        console.print("[red]a server exited[/]")
    except KeyboardInterrupt:
        pass
    finally:
        infra.down(d)


@infra_app.command("down")
def down(dir: Path | None = DIR) -> None:
    """Stop the servers started by `up` (SIGINT so noida-db saves its data, SIGKILL after 5 s)."""
    from tickerpulse.stream import infra

    stopped = infra.down(_dir(dir))
    console.print(f"stopped {len(stopped)} server(s)" + "".join(f"\n  {e['kind']} pid {e['pid']}" for e in stopped))


@infra_app.command("status")
def status(dir: Path | None = DIR, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Which servers `up` started, and whether they still run."""
    from tickerpulse.stream import infra

    rows = infra.status(_dir(dir))
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        console.print("no servers recorded (start them with: tickerpulse stream infra up)")
    for r in rows:
        state = "[green]running[/]" if r["alive"] else "[red]stopped[/]"
        where = ", ".join(x for x in (r.get("kafka") and f"Kafka {r['kafka']}", r.get("es_url") and f"ES {r['es_url']}") if x)
        console.print(f"{r['kind']} pid {r['pid']}: {state} · {where} · log {r['log_path']}")


def register(app: typer.Typer) -> None:
    for group in app.registered_groups:
        if group.name == "stream" and group.typer_instance is not None:
            group.typer_instance.add_typer(infra_app, name="infra")
            return
    app.add_typer(infra_app, name="infra")
