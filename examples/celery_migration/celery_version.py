"""The project as it was written for Celery: never run or imported by aioq's tests (aioq has
no Celery dependency), kept beside ``aioq_version.py`` to compare line by line.

    celery -A examples.celery_migration.celery_version worker -Q default,emails,reports
    celery -A examples.celery_migration.celery_version beat
"""

import os

from celery import Celery
from celery.schedules import crontab

from .mail import deliver

app = Celery(
    "newsletter",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://localhost:6379/1"),
)
app.conf.task_routes = {
    "newsletter.send_email": {"queue": "emails"},
    "newsletter.build_report": {"queue": "reports"},
}
app.conf.beat_schedule = {
    "morning-digest": {
        "task": "newsletter.morning_digest",
        "schedule": crontab(hour=7, minute=0),
    },
}
app.conf.timezone = "UTC"


@app.task(
    name="newsletter.send_email",
    bind=True,
    autoretry_for=(ConnectionError,),
    max_retries=5,
    retry_backoff=2,
    rate_limit="100/m",  # per worker process
)
def send_email(self, to, subject):
    return deliver(to, subject, attempt=self.request.retries + 1)


@app.task(name="newsletter.build_report", time_limit=300)
def build_report(day):
    return {"day": day, "sent": 0}


@app.task(name="newsletter.morning_digest")
def morning_digest():
    send_email.delay("team@example.com", "digest")


def signup(email):
    """What the web handler does when someone signs up: an AsyncResult."""
    return send_email.delay(email, "welcome")


def reminder(email):
    """A reminder an hour later, urgent, dropped if not sent within two hours."""
    return send_email.apply_async((email, "reminder"), countdown=3600, expires=7200, priority=9)


def outcome(task_id):
    """What a status endpoint reports about a task id."""
    result = app.AsyncResult(task_id)
    if not result.ready():
        return {"state": result.state}
    if result.failed():
        return {"state": result.state, "traceback": result.traceback}
    return {"state": result.state, "result": result.get(timeout=10)}
