"""`queuectl config get | list | show | set`: config.json, read and changed through the spool."""

from __future__ import annotations

import json

import click

from . import QueueGroup, open_spool, print_json


@click.group(cls=QueueGroup, aliases={"show": "list"})
def config():
    """Read and change config.json."""


@config.command("get")
@click.argument("key", required=False)
@click.option("--json", "as_json", is_flag=True, help="The value (or all settings) as one JSON document.")
@click.pass_context
def config_get(ctx, key, as_json):
    """One setting, or all of them."""
    from ..core.config import canonical_key
    settings = open_spool(ctx).config
    if key is None:
        _print_settings(settings, as_json)
        return
    value = settings[canonical_key(key)]
    print_json(value) if as_json else click.echo(json.dumps(value))


def _print_settings(settings: dict, as_json: bool) -> None:
    if as_json:
        print_json(settings)
        return
    for name, value in sorted(settings.items()):
        click.echo(f"{name} = {json.dumps(value)}")


@config.command("list")
@click.option("--json", "as_json", is_flag=True, help="The settings as one JSON object.")
@click.pass_context
def config_list(ctx, as_json):
    """Every setting with its current value."""
    _print_settings(open_spool(ctx).config, as_json)


# Negative numbers are values to check and refuse with the valid range, not unknown options.
@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@click.pass_context
def config_set(ctx, key, value):
    """Change a setting; later jobs and retries use it. Times take 90, 10m, 1h30m, 2d."""
    name, stored = open_spool(ctx).set_config(key, value)
    click.echo(f"{name} = {json.dumps(stored)}")
