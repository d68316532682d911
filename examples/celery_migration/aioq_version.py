"""The project of ``celery_version.py`` moved to aioq, line for line (run by
``tests/test_examples.py`` against a real Redis).

    aioq worker examples.celery_migration.aioq_version:app     # every queue, and the crons

No beat process: every worker fires the cron ticks and each runs once. ``task_routes`` are
the app's ``routes``; retries are for ``ConnectionError`` only, as in the Celery version.
"""

from typing import Any

from aioq import App, Job, JobNotFound, current_job

from .mail import deliver

app = App(
    "newsletter",  # Redis from $AIOQ_REDIS_URL, default redis://localhost:6379/0
    routes={"newsletter.send_email": "emails", "newsletter.build_report": "reports"},
)


@app.task(
    name="newsletter.send_email",
    autoretry_for=(ConnectionError,),
    retries=5,
    backoff=2.0,  # exponential with jitter: about 2, 4, 8 ... s
    rate_limit="100/m",  # across all workers
)
async def send_email(to: str, subject: str) -> str:
    return deliver(to, subject, attempt=current_job().attempt)


@app.task(name="newsletter.build_report", timeout=300)
async def build_report(day: str) -> dict[str, Any]:
    return {"day": day, "sent": 0}


@app.cron("0 7 * * *")  # UTC, like the beat schedule's crontab(hour=7, minute=0)
async def morning_digest() -> None:
    await send_email.enqueue("team@example.com", "digest")


async def signup(email: str) -> Job[str]:
    """What the web handler does when someone signs up: a Job[str]."""
    return await send_email.enqueue(email, "welcome")


async def reminder(email: str) -> Job[str]:
    """A reminder an hour later, urgent, dropped if not sent within two hours."""
    return await send_email.options(delay=3600, expires=7200, priority=9).enqueue(email, "reminder")


async def outcome(job_id: str) -> dict[str, Any]:
    """What a status endpoint reports about a job id."""
    job = send_email.job(job_id)
    try:
        if not await job.done():
            return {"state": await job.status()}
        info = await job.info()
    except JobNotFound:
        return {"state": "unknown"}
    if info.error is not None:
        return {"state": info.status, "traceback": info.traceback}
    return {"state": info.status, "result": info.result}
