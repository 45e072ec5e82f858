"""Helpers for the dashboard tests: a live server on a free port, jobs put in any state, raw HTTP."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from queuectl.core import locks, registry
from queuectl.core.job import build, dumps
from queuectl.dashboard.server import TOKEN_HEADER, DashboardServer, make_server


@contextmanager
def running_dashboard(spool, host: str = "127.0.0.1") -> Iterator[DashboardServer]:
    server = make_server(spool, host, 0)
    # A short poll interval: shutdown() waits for the loop to notice it.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def place(spool, state: str, job_id: str, command: str | None = "echo hi", *,
          settled_at: float | None = None, **fields) -> dict:
    """A job file written straight into `state`/, as a worker would leave it (no worker needed).

    `command=None` makes an invalid dropped-in job, as dead/ keeps them.
    """
    job = build({"command": command or "placeholder", "id": job_id, **fields}, spool.config, state=state)
    if command is None:
        job.update(command=None, invalid=True, last_error="invalid JSON: Expecting value")
    path = os.path.join(spool.dir(state), job_id + ".json")
    with open(path, "wb") as handle:
        handle.write(dumps(job))
    if settled_at is not None:
        os.utime(path, (settled_at, settled_at))
    return job


def exists(spool, state: str, job_id: str) -> bool:
    return os.path.exists(os.path.join(spool.dir(state), job_id + ".json"))


@contextmanager
def live_worker(spool, name: str, job: str | None) -> Iterator[None]:
    """A worker record whose lock is held, as a running worker keeps it.

    The job it runs is known the way workers tell it: the job file in
    processing/ names the worker.
    """
    lock = locks.take_worker_lock(spool, name)
    if job is not None:
        path = os.path.join(spool.dir("processing"), job + ".json")
        with open(path, "rb") as handle:
            running = json.loads(handle.read())
        running["worker"] = name
        with open(path, "wb") as handle:
            handle.write(dumps(running))
    registry.write_record(spool, name, {"pid": os.getpid(), "host": "testhost", "started": time.time() - 90})
    try:
        yield
    finally:
        lock.release()
        registry.remove_record(spool, name)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def request(port: int, method: str, path: str, headers: dict | None = None) -> Reply:
    """One raw request to 127.0.0.1; a Host in `headers` replaces the one http.client would send."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def get(server: DashboardServer, path: str, **headers) -> Reply:
    return request(server.port, "GET", path, headers)


def post(server: DashboardServer, path: str, *, token: str | None = "valid",
         origin: str | None = "valid", **headers) -> Reply:
    """A POST as the page sends it (its token, its Origin); pass None or a string to replace either."""
    if token is not None:
        headers[TOKEN_HEADER] = server.token if token == "valid" else token
    if origin is not None:
        headers["Origin"] = f"http://127.0.0.1:{server.port}" if origin == "valid" else origin
    return request(server.port, "POST", path, headers)
