"""`queuectl schedule add | list | show | rm | pause | resume`: recurring jobs (docs/guide/schedules.md)."""

from __future__ import annotations

import click

from ..core.job import parse_needs, shorten
from . import Duration, QueueGroup, limit_fields, open_spool, print_json


@click.group(cls=QueueGroup)
def schedule():
    """Recurring jobs: each due slot of a schedule is enqueued once, as job NAME-<slot time>."""


def _schedule_env(pairs: tuple[str, ...]) -> dict[str, str] | None:
    """A schedule's --env NAME=VALUE options as its job's `env`, None when there are none."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env or None


@schedule.command("add")
@click.argument("name")
@click.argument("command")
@click.option("--cron", help="Cron expression: 5 fields, or 6 with seconds first ('*/5 * * * *').")
@click.option("--every", help="A fixed period instead of --cron: 1s, 30s, 5m, 2h, 1d (aligned to 1970 UTC).")
@click.option("--tz", help="Time zone of --cron (IANA name, e.g. Europe/Berlin) [default: UTC].")
@click.option("--missed", type=click.Choice(("skip", "once", "all")), default="skip", show_default=True,
              help="Slots missed while no worker ran: skip them, run once, or run all (at most 100).")
@click.option("--grace", type=Duration(), help="A slot later than this is missed, not late [default: 60s].")
@click.option("--priority", "-p", type=int, help="Job priority [default: 0].")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries of each run [default: config].")
@click.option("--timeout", type=Duration(), help="Time before a run is killed: 90, 10m, 1h30m [default: config].")
@click.option("--cwd", help="Working folder of each run.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Environment of each run (repeatable).")
@click.option("--on-success", help="Completion hook after a run succeeds.")
@click.option("--on-failure", help="Completion hook after a run fails (and will be retried).")
@click.option("--on-dead", help="Completion hook after a run goes to dead/.")
@click.option("--group", metavar="NAME", help="Each run joins this group (its limit and pause apply).")
@click.option("--unique", metavar="KEY",
              help="Each run carries this unique key: a slot is not enqueued while the previous run holds it.")
@click.option("--after", "after", multiple=True, metavar="ID[,ID...]",
              help="Each run starts only once these jobs have completed (repeatable).")
@click.option("--needs", "needs", multiple=True, metavar="NAME=N[,...]",
              help="Resources each run needs on its host, e.g. gpu=2 (see 'resource set'); repeatable.")
@click.option("--memory", metavar="SIZE", help="Memory limit of each run: 512M, 2G [default: config].")
@click.option("--cpu-time", metavar="TIME", help="CPU time limit of each run: 90, 10m [default: config].")
@click.option("--max-files", metavar="N", help="Open files limit of each run [default: config].")
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.pass_context
def schedule_add(ctx, name, command, cron, every, tz, missed, grace, priority, max_retries, timeout, cwd, env,
                 on_success, on_failure, on_dead, group, unique, after, needs, memory, cpu_time, max_files, paused):
    """Add schedule NAME running COMMAND at every slot of --cron or --every."""
    if (cron is None) == (every is None):
        raise click.UsageError("give exactly one of --cron and --every")
    spool = open_spool(ctx)
    after_ids = [spool.resolve(part.strip()) for value in after for part in value.split(",") if part.strip()]
    needed = parse_needs(needs) or None
    template = {"command": command, **limit_fields(memory=memory, cpu_time=cpu_time, max_files=max_files)}
    for key, value in (("priority", priority), ("max_retries", max_retries), ("timeout", timeout),
                       ("cwd", cwd), ("env", _schedule_env(env)), ("on_success", on_success),
                       ("on_failure", on_failure), ("on_dead", on_dead), ("group", group),
                       ("unique_key", unique), ("after", after_ids or None), ("needs", needed)):
        if value is not None:
            template[key] = value
    fields = {"cron": cron, "every": every, "tz": tz, "missed": missed, "paused": paused, "job": template}
    if grace is not None:
        fields["grace"] = grace
    added = spool.add_schedule(name, fields)
    click.echo(f"{name}: next run {added['next_run'] or '-'}")


def _schedule_when(entry: dict) -> str:
    if entry.get("cron"):
        return entry["cron"] + (f" ({entry['tz']})" if entry.get("tz") else "")
    return f"every {entry['every']}s"


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of schedules.")
@click.pass_context
def schedule_list(ctx, as_json):
    """Schedules with their next run; invalid files with the reason."""
    entries = open_spool(ctx).list_schedules()
    if as_json:
        print_json(entries)
        return
    if not entries:
        click.echo("no schedules")
        return
    width = max(8, *(len(entry["name"]) for entry in entries))
    click.echo(f"{'NAME':<{width}}  {'WHEN':<28}  {'MISSED':<6}  {'NEXT RUN':<24}  COMMAND")
    for entry in entries:
        if "error" in entry:
            click.echo(f"{entry['name']:<{width}}  invalid: {shorten(entry['error'], 80)}")
            continue
        next_run = "paused" if entry["paused"] else entry["next_run"] or "-"
        click.echo(f"{entry['name']:<{width}}  {shorten(_schedule_when(entry), 28):<28}  {entry['missed']:<6}  "
                   f"{next_run:<24}  {shorten(entry['job'].get('command') or '-', 40)}")


@schedule.command("show")
@click.argument("name")
@click.pass_context
def schedule_show(ctx, name):
    """The schedule as stored, with its last fired slot and next run."""
    print_json(open_spool(ctx).get_schedule(name))


@schedule.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def schedule_rm(ctx, names):
    """Remove schedules (jobs already enqueued stay)."""
    for name in names:
        open_spool(ctx).remove_schedule(name)
        click.echo(f"{name}: removed")


@schedule.command("pause")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def schedule_pause(ctx, names):
    """Stop enqueuing; slots that pass while paused are skipped."""
    for name in names:
        open_spool(ctx).pause_schedule(name)
        click.echo(f"{name}: paused")


@schedule.command("resume")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def schedule_resume(ctx, names):
    """Enqueue again from the next slot on."""
    for name in names:
        entry = open_spool(ctx).resume_schedule(name)
        click.echo(f"{name}: resumed, next run {entry['next_run'] or '-'}")
