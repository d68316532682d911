"""The operations commands of ``aioq``: jobs, job, dlq, cancel, retry, purge, pause, resume,
enqueue. ``register`` adds them to the typer app (``commands.py``); what they read comes from
``aioq/views.py``, what they change from ``aioq/ops.py``.

Every command prints one clear line and exits 2 when MODULE:APP does not import, a queue is
unknown, or Redis does not answer; listings take ``--json`` for scripts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer

from .. import ops as actions
from .. import views
from ..errors import JobNotFound
from ..job import JobInfo, JobStatus
from .common import Json, Queues, Target, echo_json, fail, known_queues, load_app, run
from .tables import Column, first_line, print_fields, print_table, when


def register(cli: typer.Typer) -> None:
    """Add the operations commands to ``cli``, in the order ``aioq --help`` lists them."""
    cli.command()(jobs)
    cli.command()(job)
    cli.add_typer(dlq, name="dlq")
    for command in (cancel, retry, purge, pause, resume, enqueue):
        cli.command()(command)


def report(outcomes: dict[str, str], ok: set[str], as_json: bool) -> None:
    """Print one line per id (or JSON); exit 1 when any outcome is not in ``ok``."""
    if as_json:
        echo_json(outcomes)
    else:
        for key, outcome in outcomes.items():
            typer.echo(f"{key}: {outcome}")
    if any(o not in ok for o in outcomes.values()):
        raise typer.Exit(1)


# -- jobs -------------------------------------------------------------------------------------


def jobs(
    target: Target,
    status: Annotated[
        str | None,
        typer.Option(help="queued, scheduled, running, succeeded, failed, cancelled, expired"),
    ] = None,
    task: Annotated[str | None, typer.Option(help="only jobs of this task")] = None,
    queue: Queues = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many jobs")] = 50,
    keys: Annotated[
        bool,
        typer.Option(
            "--keys",
            help="list the concurrency keys at their limit instead, most jobs waiting first",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """List jobs, newest first. Queued, running, scheduled and failed ones are read from the
    queues' indexes (queued ones include those waiting for a place on their concurrency key);
    other statuses (or none) scan the job records, up to --limit matches. With --keys: the
    concurrency keys at their limit, with how many jobs wait on each."""
    if keys:
        return _keys(target, queue, limit, as_json)
    wanted: JobStatus | None = None
    if status is not None:
        try:
            wanted = JobStatus(status.lower())
        except ValueError:
            raise fail(
                f"unknown status {status!r} (use {', '.join(s.value for s in JobStatus)})"
            ) from None
    app = load_app(target)
    names = known_queues(app, queue)
    if task is not None and app.tasks and task not in app.tasks:
        # an empty table would look like "no such jobs"; an app without tasks (a producer's)
        # cannot tell, so it lists what Redis has under the name
        raise fail(
            f"no task named {task!r} on app {app.name!r} (its tasks: "
            f"{', '.join(sorted(app.tasks))})"
        )
    rows = run(
        app, lambda: views.list_jobs(app, status=wanted, task=task, queues=names, limit=limit)
    )
    if as_json:
        echo_json([r.as_dict() for r in rows])
        return
    print_table(
        f"{len(rows)} job(s) of app {app.name!r} (times UTC)",
        [Column("id"), Column("queue"), Column("task"), Column("prio", justify="right"),
         Column("status"), Column("tries", justify="right"), Column("at"), Column("due"),
         Column("error", wrap=True)],
        [
            [
                r.id, r.queue, r.task, str(r.priority), r.status, str(r.attempts),
                when(r.finished_at or r.started_at or r.enqueued_at, short=True),
                due(r.due_at, r.wait_reason, short=True, key=r.concurrency_key),
                first_line(f"{r.exc_type}: {r.error}" if r.error else None),
            ]
            for r in rows
        ],
    )  # fmt: skip


def due(
    at: datetime | None, reason: str | None, short: bool = False, key: str | None = None
) -> str:
    """When a scheduled job is due and why it waits, or the key a queued job waits for ("-"
    for other jobs)."""
    if reason == "key limit":
        return f"key {key!r} at its limit"
    if at is None and reason is None:
        return "-"
    return f"{when(at, short=short)} ({reason or 'scheduled'})"


def _keys(target: str, queue: list[str] | None, limit: int, as_json: bool) -> None:
    """``aioq jobs --keys``: the concurrency keys at their limit (``views.key_stats``)."""
    app = load_app(target)
    names = known_queues(app, queue)
    rows = run(app, lambda: views.key_stats(app, queues=names, limit=limit))
    if as_json:
        echo_json([r.as_dict() for r in rows])
        return
    print_key_stats([r.as_dict() for r in rows], f"{len(rows)} key(s) at their limit")


def print_key_stats(rows: list[dict[str, Any]], title: str) -> None:
    """The table of keys at their limit (``aioq jobs --keys``, ``aioq info``)."""
    print_table(
        title,
        [Column("queue"), Column("task"), Column("key"), Column("active", justify="right"),
         Column("waiting", justify="right"), Column("limit")],
        [
            [r["queue"], r["task"], r["key"], str(r["active"]), str(r["waiting"]),
             ", ".join(x for x in (r["concurrency"] and f"{r['concurrency']} at once",
                                   r["rate"] and f"{r['rate']}") if x) or "-"]
            for r in rows
        ],
    )  # fmt: skip


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def job(
    target: Target,
    job_id: Annotated[
        str, typer.Argument(metavar="ID", help="a job id (or a group's or workflow's id)")
    ],
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="the job's queue")] = None,
    steps: Annotated[
        int, typer.Option(min=0, help="at most this many workflow steps listed")
    ] = views.STEPS_SHOWN,
    as_json: Json = False,
) -> None:
    """One job: arguments, status, attempts, times, progress, result or error and traceback,
    the failures of earlier attempts (its history), and, for a step of a workflow (chain,
    group, chord), every step of the workflow with its status."""
    app = load_app(target)
    if queue is not None:
        known_queues(app, [queue])

    async def read() -> tuple[JobInfo | None, views.Workflow | None]:
        try:
            found: JobInfo | None = await app.job(job_id, queue).info()
        except JobNotFound:
            found = None
        if found is not None and found.workflow is None:
            return found, None  # a job enqueued alone: no more to read
        try:
            where = found.queue if found is not None else queue
            return found, await views.workflow_of(app, job_id, where, limit=steps)
        except JobNotFound:
            return found, None

    found, flow = run(app, read)
    if found is None and flow is None:
        typer.echo(f"aioq: no job {job_id!r} in queues {', '.join(app.queues)}", err=True)
        raise typer.Exit(1)
    if as_json:
        d: dict[str, Any] = views.info_dict(found) if found is not None else {"id": job_id}
        d["workflow_steps"] = flow.as_dict() if flow is not None else None
        if found is None and flow is not None:
            d["workflow"] = flow.id
        echo_json(d)
        return
    if found is not None:
        print_job(found)
    if flow is not None:
        print_workflow(flow, job_id)
    elif found is not None and found.workflow is not None:
        typer.echo(f"workflow {found.workflow}: its record has expired (steps unknown)")


def print_job(found: JobInfo) -> None:
    rows: list[tuple[str, str]] = [
        ("task", found.task), ("queue", found.queue), ("priority", str(found.priority)),
        ("status", found.status.value),
        ("attempts", f"{found.attempts} (retries allowed: {found.retries})"),
        ("args", dumps(found.args)), ("kwargs", dumps(found.kwargs)),
        ("enqueued", when(found.enqueued_at)), ("started", when(found.started_at)),
        ("finished", when(found.finished_at)), ("worker", found.worker or "-"),
        ("progress", "-" if found.progress is None else dumps(found.progress)),
    ]  # fmt: skip
    if found.status is JobStatus.SCHEDULED or found.wait_reason:
        rows.insert(4, ("due", due(found.due_at, found.wait_reason, key=found.concurrency_key)))
    if found.concurrency_key is not None:
        rows.insert(3, ("key", found.concurrency_key))
    if found.status is JobStatus.SUCCEEDED:
        rows.append(("result", dumps(found.result)))
    if found.error:
        rows.append(("error", f"{found.exc_type or 'Error'}: {found.error}"))
    for h in found.history:  # earlier attempts: history, not the job's error
        rows.append(
            (f"attempt {h['attempt']}", f"failed {when(h['at'])}: "
             f"{h['exc_type'] or 'Error'}: {h['error'] or '-'}")
        )  # fmt: skip
    if found.workflow is not None:
        rows.append(("workflow", found.workflow))
    whole = {"task", "queue", "status", "worker", "workflow"}
    out = print_fields(f"job {found.id}", rows, whole=whole)
    if found.traceback:
        out.print(found.traceback.rstrip(), markup=False, highlight=False)
    elif found.history and found.history[-1]["traceback"]:
        last = found.history[-1]
        out.print(f"traceback of attempt {last['attempt']}:", markup=False, highlight=False)
        out.print(last["traceback"].rstrip(), markup=False, highlight=False)


def print_workflow(flow: views.Workflow, asked: str) -> None:
    """The workflow's steps as a table, ``asked`` (the id on the command line) marked."""
    counts = ", ".join(f"{status} {n:,}" for status, n in sorted(flow.by_status.items()))
    groups = f", {flow.groups:,} group{'s' * (flow.groups != 1)}" if flow.groups else ""
    title = f"workflow {flow.id}: {flow.total:,} steps{groups} · {counts or 'no jobs'}"
    rows = []
    for s in flow.steps:
        if s.task is None:
            task, status = f"group of {s.total:,}", f"{s.status}: {s.done:,}/{s.total:,} done"
        else:
            task = s.task
            status = f"{s.status} ({s.wait_reason})" if s.wait_reason else s.status
            if s.error:
                status += " · " + first_line(f"{s.exc_type or 'Error'}: {s.error}")
        marks = [m for m, on in (("this", s.id == asked), ("result", s.result)) if on]
        rows.append([str(s.index + 1), s.id, task, s.queue, status, ", ".join(marks)])
    print_table(
        title,
        [Column("#", justify="right"), Column("step"), Column("task"), Column("queue"),
         Column("status", wrap=True), Column("")],
        rows,
    )  # fmt: skip
    if not flow.listed_all:
        typer.echo(
            f"{len(flow.steps):,} of {flow.total:,} steps listed: the first {flow.limit:,}, then"
            " the failed ones and the workflow's result (--steps N lists more)"
        )


# -- the dead-letter stream ---------------------------------------------------------------

dlq = typer.Typer(
    help="The dead-letter stream: jobs that could not run, with the reason.",
    no_args_is_help=True,
)


@dlq.callback()
def dlq_target(ctx: typer.Context, target: Target) -> None:
    """The dead-letter stream of MODULE:APP: list | show ENTRY_ID | requeue ENTRY_ID... |
    requeue --all | purge."""
    ctx.obj = target


@dlq.command("list")
def dlq_list(
    ctx: typer.Context,
    queue: Queues = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many entries")] = 100,
    as_json: Json = False,
) -> None:
    """The newest dead-letter entries, with the reason each is there."""
    app = load_app(ctx.obj)
    names = known_queues(app, queue)
    rows = run(app, lambda: views.dead_letters(app, names, limit))
    if as_json:
        echo_json([r.as_dict() for r in rows])
        return
    print_table(
        f"{len(rows)} dead-letter {plural(len(rows))} of app {app.name!r}",
        [*map(Column, ("entry", "queue", "job", "task", "at")), Column("reason", wrap=True)],
        [
            [r.entry, r.queue, r.job_id or "-", r.task or "-", when(r.at, short=True), r.reason]
            for r in rows
        ],
    )


@dlq.command("show")
def dlq_show(
    ctx: typer.Context,
    entry_id: Annotated[str, typer.Argument(metavar="ENTRY_ID")],
    queue: Queues = None,
    as_json: Json = False,
) -> None:
    """One dead-letter entry: the reason, the raw stream entry, the job's record now and the
    copy taken when it was buried."""
    app = load_app(ctx.obj)
    names = known_queues(app, queue)
    found = run(app, lambda: views.find_dead_letter(app, entry_id, names))
    if not found:
        typer.echo(f"aioq: no dead-letter entry {entry_id!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        echo_json(found[0].as_dict() if len(found) == 1 else [f.as_dict() for f in found])
        return
    for d in found:
        typer.echo(f"entry     {d.entry} (queue {d.queue!r})")
        typer.echo(f"job       {d.job_id or '-'}  task {d.task or '-'}")
        typer.echo(f"at        {when(d.at)}")
        typer.echo(f"reason    {d.reason}")
        typer.echo(f"stream    entry {d.stream_entry}: {json.dumps(d.fields)}")
        now = d.current.get("status", "?") if d.current is not None else "gone (expired)"
        then = d.job.get("status", "?") if d.job is not None else "-"
        typer.echo(f"status    {now} now (was {then} when buried)")
        typer.echo(f"record now       {json.dumps(d.current) if d.current is not None else '-'}")
        typer.echo(f"record at burial {json.dumps(d.job) if d.job is not None else '-'}")


@dlq.command("requeue")
def dlq_requeue(
    ctx: typer.Context,
    entry_ids: Annotated[list[str] | None, typer.Argument(metavar="[ENTRY_ID]...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="requeue every entry")] = False,
    queue: Queues = None,
    as_json: Json = False,
) -> None:
    """Put dead-letter entries' jobs back on their queue as fresh attempts."""
    if bool(entry_ids) == all_:
        raise fail("give ENTRY_ID... or --all (not both)")
    app = load_app(ctx.obj)
    names = known_queues(app, queue)

    async def requeue() -> dict[str, str]:
        if all_:
            return await actions.requeue_all_dead(app, names)
        out: dict[str, str] = {}
        for eid in entry_ids or ():
            found = await views.find_dead_letter(app, eid, names)
            if len(found) != 1:
                out[eid] = "missing" if not found else "in several queues: give --queue"
            else:
                out.update(await actions.requeue_dead(app, found[0].queue, [eid]))
        return out

    outcomes = run(app, requeue)
    if all_ and not as_json:
        n = sum(o == actions.REQUEUED for o in outcomes.values())
        typer.echo(f"requeued {n} of {len(outcomes)} dead-letter {plural(len(outcomes))}")
        outcomes = {k: o for k, o in outcomes.items() if o != actions.REQUEUED}
    report(outcomes, {actions.REQUEUED}, as_json)


@dlq.command("purge")
def dlq_purge(
    ctx: typer.Context,
    queue: Queues = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete dead-letter entries for good."""
    app = load_app(ctx.obj)
    names = known_queues(app, queue)
    if not yes:
        typer.confirm(
            f"Delete every dead-letter entry of queue(s) {', '.join(names)} of app {app.name!r}?",
            abort=True,
        )
    n = run(app, lambda: actions.purge_dead(app, names))
    typer.echo(f"deleted {n} dead-letter {plural(n)}")


# -- control ----------------------------------------------------------------------------------


def cancel(
    target: Target,
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="job ids")],
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="the jobs' queue")] = None,
    as_json: Json = False,
) -> None:
    """Cancel jobs: a queued or scheduled job never starts, a running one is cancelled."""
    app = load_app(target)
    if queue is not None:
        known_queues(app, [queue])
    outcomes = run(app, lambda: actions.cancel(app, job_ids, queue))
    report(outcomes, {"cancelled", "cancelling"}, as_json)


def retry(
    target: Target,
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="ids of failed jobs")],
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="the jobs' queue")] = None,
    as_json: Json = False,
) -> None:
    """Put failed jobs back on their queue as fresh attempts (other jobs are left alone)."""
    app = load_app(target)
    if queue is not None:
        known_queues(app, [queue])
    outcomes = run(app, lambda: actions.retry(app, job_ids, queue))
    outcomes = {k: v if v in (actions.REQUEUED, "missing") else f"not failed ({v})" for k, v in
                outcomes.items()}  # fmt: skip
    report(outcomes, {actions.REQUEUED}, as_json)


def purge(
    target: Target,
    queue: Annotated[str, typer.Option("--queue", "-q", help="the queue to empty")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a queue's queued jobs (running ones are left to finish)."""
    app = load_app(target)
    known_queues(app, [queue])
    if not yes:
        typer.confirm(
            f"Delete every queued job of queue {queue!r} of app {app.name!r}?", abort=True
        )
    entries, deleted = run(app, lambda: actions.purge_queue(app, queue))
    typer.echo(f"purged {deleted} queued job(s) from queue {queue!r} ({entries} stream entries)")


def pause(
    target: Target,
    queue: Annotated[list[str], typer.Option("--queue", "-q", help="queue to pause (repeatable)")],
) -> None:
    """Workers take no new jobs from the queue(s); running jobs finish."""
    app = load_app(target)
    names = known_queues(app, queue)
    run(app, lambda: actions.pause(app, names))
    typer.echo(f"paused {', '.join(names)} (workers notice within a few seconds)")


def resume(
    target: Target,
    queue: Annotated[list[str], typer.Option("--queue", "-q", help="queue to resume (repeatable)")],
) -> None:
    """Workers take jobs from the queue(s) again."""
    app = load_app(target)
    names = known_queues(app, queue)
    run(app, lambda: actions.resume(app, names))
    typer.echo(f"resumed {', '.join(names)}")


def enqueue(
    target: Target,
    task: Annotated[str, typer.Argument(metavar="TASK", help="a task name of the app")],
    args: Annotated[str, typer.Option("--args", help="JSON array of arguments")] = "[]",
    kwargs: Annotated[str, typer.Option("--kwargs", help="JSON object of arguments")] = "{}",
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    job_id: Annotated[str | None, typer.Option("--job-id", help="idempotency key")] = None,
    delay: Annotated[float, typer.Option(min=0, help="seconds to wait before it may start")] = 0,
    priority: Annotated[
        int | None, typer.Option(help="0 (lowest) to 9; default: the task's")
    ] = None,
    as_json: Json = False,
) -> None:
    """Enqueue a job and print its id (an existing --job-id enqueues nothing)."""
    positional, named = parse_json(args, list, "--args"), parse_json(kwargs, dict, "--kwargs")
    app = load_app(target)
    if task not in app.tasks:
        known = ", ".join(map(repr, sorted(app.tasks))) or "none"
        raise fail(f"unknown task {task!r}: app {app.name!r} has {known}")
    if queue is not None:
        known_queues(app, [queue])
    if app.tasks[task].broadcast:
        raise fail(f"task {task!r} is a broadcast task: enqueue it from Python (BroadcastTask)")
    try:
        call = app.options(task, queue=queue, job_id=job_id, delay=delay or None, priority=priority)
        prepared = call.call(*positional, **named)
        prepared.prepare()  # validates arguments and options before anything is sent
    except (TypeError, ValueError) as exc:
        raise fail(str(exc)) from None
    created = run(app, lambda: app.enqueue_many([prepared]))
    if as_json:
        echo_json({"id": created[0].id, "queue": created[0].queue})
    else:
        typer.echo(created[0].id)


def plural(n: int) -> str:
    return "entry" if n == 1 else "entries"


def parse_json(text: str, kind: type[Any], option: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        expected = "a JSON array" if kind is list else "a JSON object"
        raise fail(f"{option} must be {expected}, got {type(value).__name__}")
    return value
