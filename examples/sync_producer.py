"""Enqueueing from sync code: a plain WSGI application (what Django and Flask are underneath),
with no event loop anywhere.

Its handlers run in the server's threads and call ``place_order.enqueue_sync(...)``, which
blocks for one round trip and returns a ``SyncJob``; its ``status()``, ``info()`` and
``result(timeout=)`` block too. A worker runs the jobs elsewhere::

    aioq worker examples.tasks:app                  # terminal 1
    python -m examples.sync_producer                # terminal 2: serves http://127.0.0.1:8000
    curl -X POST -d '{"item": "book", "quantity": 2}' localhost:8000/orders
    curl 'localhost:8000/jobs/<job_id>/result?timeout=5'

In a Django view the same lines read ``job = place_order.enqueue_sync(item, quantity)`` and
``JsonResponse({"job_id": job.id}, status=202)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from aioq import JobNotFound, JobStatus, TaskFailed

from .tasks import app as queue_app
from .tasks import place_order

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point: ``POST /orders``, ``GET /jobs/<id>``, ``GET /jobs/<id>/result``."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    parts = path.strip("/").split("/")
    try:
        if method == "POST" and parts == ["orders"]:
            return _order(environ, start_response)
        if method == "GET" and len(parts) == 2 and parts[0] == "jobs":
            return _snapshot(parts[1], start_response)
        if method == "GET" and len(parts) == 3 and parts[0] == "jobs" and parts[2] == "result":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            return _result(parts[1], float(query.get("timeout", ["10"])[0]), start_response)
    except JobNotFound:
        return _json(start_response, "404 Not Found", {"detail": "no such job"})
    return _json(start_response, "404 Not Found", {"detail": f"no route {method} {path}"})


def _order(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
        item, quantity = str(body["item"]), int(body["quantity"])
    except (ValueError, KeyError, TypeError):
        return _json(start_response, "400 Bad Request", {"detail": "need item and quantity"})
    job = place_order.enqueue_sync(item, quantity)  # one round trip; the worker runs it
    return _json(start_response, "202 Accepted", {"job_id": job.id})


def _snapshot(job_id: str, start_response: StartResponse) -> Iterable[bytes]:
    info = queue_app.job_sync(job_id).info()
    return _json(start_response, "200 OK", {"id": info.id, "status": info.status.value})


def _result(job_id: str, timeout: float, start_response: StartResponse) -> Iterable[bytes]:
    job = queue_app.job_sync(job_id)
    try:
        receipt = job.result(timeout=timeout)  # blocks this thread, pushed over pub/sub
    except TaskFailed as exc:
        return _json(start_response, "422 Unprocessable Entity", {"error": str(exc)})
    except TimeoutError:
        status: JobStatus = job.status()
        return _json(start_response, "202 Accepted", {"status": status.value})
    return _json(start_response, "200 OK", receipt)


def _json(start_response: StartResponse, status: str, body: object) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


if __name__ == "__main__":
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class _ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = (
            True  # one thread per request, as Django's runserver and gunicorn's gthread
        )

    with make_server("127.0.0.1", 8000, application, server_class=_ThreadingServer) as server:
        print("serving on http://127.0.0.1:8000")
        server.serve_forever()
