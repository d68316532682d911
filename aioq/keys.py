"""The Redis key layout: the one place that knows what every key is called.

Every key of one queue carries the hash tag ``{<app>:<queue>}``, so each Lua script touches a
single cluster slot and two apps (or two queues) never collide::

    aioq:{shop:default}:stream          stream of queued and running jobs of priority 0 (the
                                        default); consumer group "aioq". Each entry is one
                                        field, ``id=<job id>``; finished entries are XACKed and
                                        XDELed, so the stream stays bounded.
    aioq:{shop:default}:stream:<p>      the same for priority p, 1..9: one stream per level,
                                        read highest first (``scripts/fetch.lua``).
    aioq:{shop:default}:scheduled       sorted set: job id -> epoch milliseconds it is due
                                        (delays, retry backoff); promoted into the stream by Lua.
    aioq:{shop:default}:dead            dead-letter stream: poison, garbage and unknown-task
                                        entries, each with the reason and the raw entry.
    aioq:{shop:default}:job:<id>        hash: the job record (see ``message.JobFields``).
    aioq:{shop:default}:done:<id>       pub/sub channel: the job's final status is published here.
    aioq:{shop:default}:cancel          pub/sub channel: ids of running jobs to cancel; every
                                        worker serving the queue listens.
    aioq:{shop:default}:ratelimits      hash: task -> "<limit> <period ms>" declared in code
                                        (written by workers), task + "!" -> a run-time override.
    aioq:{shop:default}:rate:<task>     sorted set: the task's starts in the current window.
    aioq:{shop:default}:ratewait:<task> sorted set: job id -> due, the task's jobs turned away
                                        by its rate limit and not yet due (spaces them out).
    aioq:{shop:default}:cron:<schedule> string: the last cron tick handled (epoch ms).
    aioq:{shop:default}:cronran:<schedule> string: the last cron tick that enqueued its job
                                        (epoch ms): absent while the schedule never ran.
    aioq:{shop:default}:failed          sorted set: job id -> epoch ms it finished ``failed``
                                        (written where jobs finish; entries older than the
                                        result TTL are trimmed on insert): the failed-jobs index.
    aioq:{shop:default}:paused          string: present while ``aioq pause`` holds the queue;
                                        workers read it every 0.5 s and take nothing new.
    aioq:{shop:default}:progress:<id>   pub/sub channel: "<seq> <JSON>" on each set_progress.
    aioq:{shop:default}:recent          stream: one entry per worker script call that finished
                                        jobs (a completion batch, mostly), field ``ids``: a JSON
                                        array of them (succeeded, failed, cancelled, expired),
                                        capped near 100 entries: the recently finished jobs
                                        (``views.recent_jobs``), one XADD per batch, not job.
    aioq:{shop:default}:flows           sorted set: workflows' hand-over outbox (``handover.py``):
                                        id of a finished job (or fired join) whose successors are
                                        not yet told -> epoch ms it was added or last swept.
                                        Written in the same script that finishes the job;
                                        removed once every successor was told.
    aioq:{shop:default}:flow:<id>       hash: a workflow's record (``canvas.py``: its steps, the
                                        node whose outcome is the workflow's) or a join of a group
                                        (total, done, fired, mode, then, r:<i> each member's
                                        outcome); lives in the slot of the queue of the step it
                                        hands over to (a chord's callback), expires like the jobs.
    aioq:{shop:default}:unique:<task>:<key>  string: the id of the job that holds a
                                        ``unique_for`` key (``dedup.lua``): set when the job is
                                        written; once it finishes, its hand-over (an "unlock"
                                        in its ``then``) makes the key expire ``unique_for``
                                        after its finish. The enqueue script checks the job it
                                        names, so a key that outlives its job frees nothing early.
    aioq:{shop:default}:debounce:<task>:<key>  string: the id of the job a ``debounce`` key
                                        gathers enqueues into while it waits (wait "debounce");
                                        expires ``DEBOUNCE_SLACK`` ms after its due time.
    aioq:{shop:default}:handed:<consumer>  set: broadcast copies another worker handed to this
                                        consumer (``broadcast.lua``), "<priority> <entry id> <job
                                        id>" each, until it takes them; also the pub/sub channel
                                        (same name) that tells it so. Expires ``HANDED_TTL`` s
                                        after the last hand-over.
    aioq:{shop:default}:broadcast:<id>  hash: a broadcast's copies, worker consumer name -> the
                                        copy's job id (``broadcast.py``); expires like a workflow.
    aioq:{shop:default}:guard           never written: every script declares it, so while the
                                        queue's slot migrates between Redis Cluster nodes (some
                                        keys moved, some not) Redis refuses the scripts
                                        (TRYAGAIN) rather than run one on half the keys
                                        (``cluster.py``).

Flow control by key (``scripts/keyed.lua``; docs/flow-control.md). A keyed job belongs
to the *group* ``<task>\0<key>`` (its task's name, a NUL, its concurrency key: keys are per
task), written ``<g>`` below::

    aioq:{shop:default}:keyed           sorted set: groups with jobs waiting for a place ->
                                        epoch ms they are next swept (promote.lua checks their
                                        places against the records, so none can leak).
    aioq:{shop:default}:keylimits       hash: task -> "<concurrency> <rate n> <rate period ms>",
                                        the key limits its code declares (written by workers):
                                        for keyed jobs of producers that enqueue by name only;
                                        and the field "" once the queue had a keyed job (then
                                        the worker reads each job's `keyed` field).
    aioq:{shop:default}:keyrun:<g>      list: "<priority>:<places>:<job id>" of the group's
                                        jobs that hold a place (their entry is on a stream,
                                        they run, or a rate limit sent them back for a moment),
                                        in the order they took it.
    aioq:{shop:default}:keywait:<g>     list: "<priority>:<places>:<job id>" of the group's
                                        jobs waiting for a place, oldest first (their records
                                        say "queued"; one cancelled meanwhile leaves at its
                                        turn).
    aioq:{shop:default}:keyrate:<g>     sorted set: the group's starts in the current window
                                        of its ``key_rate_limit``.
    aioq:{shop:default}:keyratewait:<g> sorted set: job id -> due, the group's jobs turned
                                        away by its rate limit and not yet due (as ratewait).

The Lua never spells a key: the suffixes below are rendered into it (``LUA``), every script of
a queue gets the queue's keys in its KEYS (``QueueKeys.declared``, in the order
``scripts/queue.lua`` names them), and keys named by data (``job:<id>``, ``rate:<task>``) are
built on the hash tag of a declared key (``tag_of`` in ``scripts/helpers.lua``), the one way
the Lua derives it.

Two keys are per app rather than per queue (hash tag ``{<app>}``, so the heartbeat script
writes both in one slot)::

    aioq:{shop}:workers                 hash: worker consumer name -> JSON of its stats and the
                                        Redis time of its last heartbeat (every 2 s); removed on
                                        a clean stop, pruned by ``aioq info`` when stale.
    aioq:{shop}:throughput              hash: bucket start (epoch s by Redis' clock, a multiple
                                        of ``THROUGHPUT_BUCKET``) -> jobs the app's workers
                                        finished in it, added by each heartbeat (0 too, so idle
                                        time reads as zero); a bucket that began
                                        ``THROUGHPUT_WINDOW`` s or more before the current one
                                        is pruned (60 are kept), and the hash expires a bucket
                                        after the window once no worker beats
                                        (``views.throughput``, the dashboard's chart).

Job ids are unique per queue: a job's record lives beside its stream, so one script can write
both atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "aioq"
"""The consumer group every worker of every queue reads with."""

PRIORITIES = 10
"""Priority levels 0 (the default, lowest) to 9 (highest): one stream each."""

# The suffixes after a queue's tag, said once: ``QueueKeys`` builds names from them and the Lua
# gets them rendered in (``LUA``, ``scripts/lua.py``), so the two cannot drift apart.
STREAM = "stream"
SCHEDULED = "scheduled"
DEAD = "dead"
FAILED = "failed"
RECENT = "recent"
RATELIMITS = "ratelimits"
PAUSED = "paused"
CANCEL = "cancel"
JOB = "job:"
DONE = "done:"
RATE = "rate:"
RATEWAIT = "ratewait:"
CRON = "cron:"
CRON_RAN = "cronran:"
PROGRESS = "progress:"
FLOWS = "flows"
FLOW = "flow:"
KEYED = "keyed"
KEYLIMITS = "keylimits"
KEYRUN = "keyrun:"
KEYWAIT = "keywait:"
KEYRATE = "keyrate:"
KEYRATEWAIT = "keyratewait:"
KEY_SEP = "\0"
"""Between the task and the concurrency key in a group's name (keys.py docstring)."""
UNIQUE = "unique:"
DEBOUNCE = "debounce:"
HANDED = "handed:"
BROADCAST = "broadcast:"

DEBOUNCE_SLACK = 3_600_000
"""Milliseconds a debounce key outlives its job's due time (the enqueue script checks the
job it names, so this only bounds how long an unused key stays)."""

HANDED_TTL = 3_600
"""Seconds a worker's set of handed broadcast copies outlives the last hand-over (a worker
takes them within a round trip; a dead one never does, and its copies fail after their
lease, ``broadcast.lua``)."""

GUARD = "guard"

THROUGHPUT_BUCKET = 10
"""Seconds per bucket of the throughput hash (one bar of the dashboard's chart)."""

THROUGHPUT_WINDOW = 600
"""Seconds of throughput buckets kept (the chart's 10 minutes)."""

KEY_CHECK_MS = 5_000
"""How often a place held on a key is checked against its job's record, and a key with jobs
waiting is swept (``scripts/keyed.lua``): a place nothing holds comes back within that."""

QUEUE_KEYS = PRIORITIES + 9
"""How many KEYS ``QueueKeys.declared`` gives a script: the queue's keys it may touch."""

LUA: dict[str, str] = {
    "PRIORITIES": str(PRIORITIES),
    "QUEUE_KEYS": str(QUEUE_KEYS),
    "THROUGHPUT_BUCKET": str(THROUGHPUT_BUCKET),
    "THROUGHPUT_WINDOW": str(THROUGHPUT_WINDOW),
    "KEY_CHECK_MS": str(KEY_CHECK_MS),
    "DEBOUNCE_SLACK": str(DEBOUNCE_SLACK),
    "HANDED_TTL": str(HANDED_TTL),
    **{
        f"KEY_{name}": value
        for name, value in dict(
            STREAM=STREAM, SCHEDULED=SCHEDULED, DEAD=DEAD, FAILED=FAILED, RECENT=RECENT,
            RATELIMITS=RATELIMITS, CANCEL=CANCEL, JOB=JOB, DONE=DONE, RATE=RATE,
            RATEWAIT=RATEWAIT, FLOW=FLOW, UNIQUE=UNIQUE, DEBOUNCE=DEBOUNCE, HANDED=HANDED,
            KEYRUN=KEYRUN, KEYWAIT=KEYWAIT, KEYRATE=KEYRATE, KEYRATEWAIT=KEYRATEWAIT,
        ).items()
    },
}  # fmt: skip
"""What ``{{NAME}}`` stands for in the Lua."""


@dataclass(frozen=True, slots=True, eq=False)  # App.keys() caches one per queue: identity
class QueueKeys:
    """All key names of one queue of one app.

    ``priority`` picks the level: which of the queue's streams (one per priority) ``stream``
    names. Every other key is shared by the levels. ``App.keys(queue)`` is level 0;
    ``keys.level(p)`` the others.
    """

    app: str
    queue: str
    priority: int = 0
    _levels: tuple[QueueKeys, ...] = field(default=(), init=False, repr=False)
    _declared: tuple[str, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.priority == 0:
            levels = (self, *(QueueKeys(self.app, self.queue, p) for p in range(1, PRIORITIES)))
            for level in levels:
                object.__setattr__(level, "_levels", levels)
            declared = (
                *(level.stream for level in levels),
                self.scheduled, self.dead, self.failed, self.recent, self.ratelimits,
                self.flows, self.keyed, self.keylimits, self.guard,
            )  # fmt: skip
            object.__setattr__(self, "_declared", declared)

    def level(self, priority: int) -> QueueKeys:
        """The keys of this queue's stream for ``priority`` (0..9)."""
        return self.levels[priority]

    @property
    def levels(self) -> tuple[QueueKeys, ...]:
        """One per priority, lowest (0) first."""
        # a level built directly (QueueKeys(app, queue, 3)) has none of its own: its queue's
        return self._levels or QueueKeys(self.app, self.queue).levels

    @property
    def tag(self) -> str:
        return f"aioq:{{{self.app}:{self.queue}}}:"

    @property
    def stream(self) -> str:
        if self.priority:
            return f"{self.tag}{STREAM}:{self.priority}"
        return self.tag + STREAM

    @property
    def scheduled(self) -> str:
        return self.tag + SCHEDULED

    @property
    def dead(self) -> str:
        return self.tag + DEAD

    @property
    def job_prefix(self) -> str:
        return self.tag + JOB

    @property
    def done_prefix(self) -> str:
        return self.tag + DONE

    @property
    def cancel(self) -> str:
        return self.tag + CANCEL

    @property
    def ratelimits(self) -> str:
        return self.tag + RATELIMITS

    def cron_state(self, schedule: str) -> str:
        return self.tag + CRON + schedule

    def cron_ran(self, schedule: str) -> str:
        return self.tag + CRON_RAN + schedule

    @property
    def failed(self) -> str:
        return self.tag + FAILED

    @property
    def paused(self) -> str:
        return self.tag + PAUSED

    @property
    def recent(self) -> str:
        return self.tag + RECENT

    @property
    def flows(self) -> str:
        return self.tag + FLOWS

    def flow(self, flow_id: str) -> str:
        return self.tag + FLOW + flow_id

    @property
    def keyed(self) -> str:
        return self.tag + KEYED

    @property
    def keylimits(self) -> str:
        return self.tag + KEYLIMITS

    def keyrun(self, group: str | bytes) -> bytes:
        """The places held in a key's group (``group``: ``key_group`` of a task and key)."""
        return _data_key(self.tag + KEYRUN, group)

    def keywait(self, group: str | bytes) -> bytes:
        """The jobs of a key's group waiting for a place."""
        return _data_key(self.tag + KEYWAIT, group)

    def keyrate(self, group: str | bytes) -> bytes:
        """The starts of a key's group in the window of its rate limit."""
        return _data_key(self.tag + KEYRATE, group)

    @property
    def guard(self) -> str:
        return self.tag + GUARD

    @property
    def declared(self) -> tuple[str, ...]:
        """The KEYS of every script of the queue: each priority's stream (0 first), then the
        scheduled set, the dead-letter stream, the failed index, the recent stream, the rate
        limits, the hand-over outbox, the index of keys with jobs waiting, the declared key
        limits and the guard (``queue.lua`` names them). Keys named by data (a job's record, a
        task's rate log) share their hash tag, so every script stays in one cluster slot."""
        return self.levels[0]._declared

    def unique(self, lock: str) -> str:
        """The ``unique_for`` key ``lock`` ("<task>:<key>") of the queue."""
        return self.tag + UNIQUE + lock

    def debounce(self, lock: str) -> str:
        """The ``debounce`` key ``lock`` ("<task>:<key>") of the queue."""
        return self.tag + DEBOUNCE + lock

    def handed(self, consumer: str) -> str:
        """The set (and channel) of broadcast copies handed to worker ``consumer``."""
        return self.tag + HANDED + consumer

    def broadcast(self, broadcast_id: str) -> str:
        """A broadcast's record: worker -> its copy's job id."""
        return self.tag + BROADCAST + broadcast_id

    def progress(self, job_id: str) -> str:
        return self.tag + PROGRESS + job_id

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def done(self, job_id: str) -> str:
        return self.done_prefix + job_id


def key_group(task: str, key: str) -> str:
    """The group of a task's jobs with concurrency key ``key`` (keyed names carry it)."""
    return task + KEY_SEP + key


def split_group(group: bytes) -> tuple[str, str]:
    """(task, key) of a group's name as Redis returns it (a name without the separator, which
    aioq never writes, reads as a key of no task)."""
    task, sep, key = group.decode(errors="replace").partition(KEY_SEP)
    return (task, key) if sep else ("", task)


def _data_key(prefix: str, group: str | bytes) -> bytes:
    return prefix.encode() + (group if isinstance(group, bytes) else group.encode())


def workers_key(app: str) -> str:
    """The app's hash of live workers' heartbeats (see the module docstring)."""
    return f"aioq:{{{app}}}:workers"


def throughput_key(app: str) -> str:
    """The app's hash of finished jobs per time bucket (see the module docstring)."""
    return f"aioq:{{{app}}}:throughput"


def validate_name(kind: str, name: str) -> str:
    """Reject names that would break the key layout (braces end a hash tag early)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")
    bad = set(name) & set("{}:\r\n ")
    if bad:
        chars = "".join(sorted(bad))
        raise ValueError(f"{kind} name {name!r} must not contain any of {chars!r}")
    return name
