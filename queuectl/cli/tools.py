"""`dashboard`, `metrics`, `doctor`, `schema` and `demo`: serving, exporting, checking and trying the spool."""

from __future__ import annotations

from typing import Any

import click

from ..api import Spool
from ..core.registry import MAX_WORKERS
from . import Command, open_spool, print_json
from .inspection import status


class LazyPath(click.ParamType):
    """click.Path, built when a value comes: its constructor translates its name through gettext.

    Built in a decorator, it would make every command import locale at start-up.
    """

    def __init__(self, **options: Any):
        self.options = options
        self.name = ("directory" if options.get("file_okay") is False else
                     "file" if options.get("dir_okay") is False else "path")

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return click.Path(**self.options).convert(value, param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
        return click.Path(**self.options).shell_complete(ctx, param, incomplete)



@click.command(cls=Command)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (another than 127.0.0.1 shows the dashboard to the network).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.pass_context
def dashboard(ctx, host, port):
    """Serve the web dashboard (Ctrl-C stops it)."""
    from ..dashboard.server import serve
    serve(open_spool(ctx), host=host, port=port)


@click.command(cls=Command)
@click.option("--output", "-o", metavar="FILE", type=LazyPath(dir_okay=False, writable=True),
              help="Write FILE atomically (a temporary file renamed over it) instead of printing: "
                   "for node_exporter's textfile collector.")
@click.pass_context
def metrics(ctx, output):
    """The Prometheus text of the dashboard's /metrics, without a server.

    Without the counters (queuectl_*_total): one run has no earlier scan to
    count settles from, and a count of the files there now would fall after
    a purge; `queuectl dashboard` serves them at /metrics. The duration
    summary reads the latest settled jobs only.
    """
    from ..metrics import render, write_file
    text = render(open_spool(ctx))
    if output is None:
        click.echo(text, nl=False)
    else:
        write_file(output, text)


@click.command(cls=Command)
@click.option("--repair", is_flag=True, help="Fix what is safe to fix.")
@click.option("--json", "as_json", is_flag=True, help="The findings as a JSON array.")
@click.pass_context
def doctor(ctx, repair, as_json):
    """Check the spool for damage; exit 1 when something is wrong."""
    from ..doctor import check
    # The doctor opens a spool others can write to, if only to report it and, with --repair, close it.
    findings = check(Spool(ctx.find_root().obj["path"], allow_shared=True), repair=repair)
    if as_json:
        print_json(findings)
    else:
        for finding in findings:
            fixed = " [repaired]" if finding.get("repaired") else ""
            click.echo(f"{finding['problem']}: {finding['path']} - {finding['detail']}{fixed}")
        if not findings:
            click.echo("spool is healthy")
        for record in Spool(ctx.find_root().obj["path"], allow_shared=True).workers():
            click.echo(f"worker {record['name']} on {record.get('host', '?')}: {record.get('mode', '?')} mode")
    if any(not finding.get("repaired") for finding in findings):
        raise SystemExit(1)


@click.command(cls=Command)
def schema():
    """Print the JSON Schema of a job file (validate a file before dropping it in)."""
    from ..schema import schema_text
    click.echo(schema_text(), nl=False)


@click.command(cls=Command)
@click.option("--count", "-n", type=click.IntRange(min=1, max=MAX_WORKERS), default=2, show_default=True,
              help="Worker processes that drain the example jobs.")
@click.option("--example", type=LazyPath(exists=True, file_okay=False), default=None,
              help="Folder of example jobs [default: the example spool shipped with queuectl].")
@click.pass_context
def demo(ctx, count, example):
    """Copy the example jobs into the spool, drain them with workers, print the status."""
    from ..demo import run_demo
    spool = open_spool(ctx)
    for line in run_demo(spool, count=count, example=example):
        click.echo(line)
    ctx.invoke(status)
