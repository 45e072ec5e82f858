"""`queuectl dashboard`: one page and a JSON API over a spool, on the standard library's HTTP server.

Routes (GET unless marked POST):

    /                               the page (static/index.html carrying this process's token)
    /static/<file>                  app.js, style.css, favicon.svg
    /api/status                     counts per state, live workers, schedules, settles per minute (last hour)
    /api/jobs?state=&q=&offset=&limit=   a page of jobs, newest id first; q matches part of the id
    /api/jobs/<id>                  the whole job
    /api/jobs/<id>/log?tail=BYTES   the end of its log
    /jobs/<id>                      the page of one job (the same page, opened on that job)
    POST /api/jobs/<id>/retry       a dead job back to pending
    POST /api/jobs/<id>/cancel      a pending or failed job to dead/; a running one is stopped first
    POST /api/dlq/retry-all?after=  dead jobs back to pending, one time-boxed batch per call
    POST /api/pause?group=          pause the spool (or one group): workers start nothing new
    POST /api/resume?group=         resume it
    /metrics                        Prometheus text

Promises:
- GET never changes anything. A POST must carry this process's random
  token in X-Queuectl-Token (only the served page knows it) and an Origin
  equal to the page's own, so another web site cannot retry jobs. Every
  request's Host must name the address the server is bound to, so a site
  that rebinds its DNS name to 127.0.0.1 cannot read the page or its token.
- Ids from URLs pass `is_valid_id` before they reach the file system.
- Job text reaches the page only as JSON that app.js inserts with
  textContent; the one value rendered into HTML here (the token) is
  escaped; the Content-Security-Policy (default-src 'self') refuses inline
  and foreign scripts.
- A call costs directory listings plus at most a page of file reads: no
  job file it does not return is parsed, so a deep spool stays quick to
  browse (docs/guide/dashboard.md).
"""

from __future__ import annotations

import bisect
import heapq
import hmac
import html
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .. import metrics
from ..core import lifecycle, registry
from ..core.errors import InvalidJob, JobNotFound, QueueError, WrongState
from ..core.job import STATES, is_valid_id
from ..core.spool import id_of
from ..features import resources as host_resources
from ..features import workflow
from ..features.schedules import upcoming as upcoming_schedules
from ..snapshot import Scanner, throughput

TOKEN_HEADER = "X-Queuectl-Token"
PAGE_SIZE, PAGE_SIZE_MAX = 25, 200
HEAP_PAGES_END = 1000  # pages ending before this come from a heap, deeper ones from one sort
LOG_TAIL, LOG_TAIL_MAX = 64 * 1024, 1024 * 1024
TEXT_CLIP = 300  # characters of command and error in listings; the detail view has the rest
RETRY_ALL_BUDGET = 0.1  # seconds of retrying per call, so a huge DLQ never makes one slow call
STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]/@\s]+)(?::(\d{1,5}))?")
LIST_FIELDS = ("id", "state", "attempts", "max_retries", "priority", "created_at", "updated_at",
               "run_at", "next_run_at", "finished_at", "last_exit_code", "worker", "invalid",
               "group", "after", "waiting_on")


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


# -- the server --------------------------------------------------------------


class DashboardServer(ThreadingHTTPServer):
    """Serves one spool; knows its token and which Host names it answers to."""

    daemon_threads = True

    def __init__(self, spool, host: str, port: int):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), DashboardHandler)
        self.spool = spool
        self.token = secrets.token_urlsafe(32)
        self.port = self.server_address[1]
        bound = ipaddress.ip_address(str(self.server_address[0]))
        self.loopback = bound.is_loopback
        self.any_address = bound.is_unspecified
        self.host_names = _host_names(host, bound)
        shown = socket.gethostname() if self.any_address else _host_form(host)
        self.url = f"http://{shown}:{self.port}/"
        self.scanner = Scanner(spool, watch=True)
        self.scanner.scan()  # the first scan stats every settled file: pay for it before any request
        static = resources.files(__package__) / "static"
        self.page = static.joinpath("index.html").read_text("utf-8").replace(
            "{{token}}", html.escape(self.token)).encode("utf-8")
        self.static = {name: static.joinpath(name).read_bytes() for name in STATIC_TYPES}

    def server_close(self) -> None:
        super().server_close()
        scanner = getattr(self, "scanner", None)  # none yet when the bind itself failed
        if scanner is not None:
            scanner.close()

    def accepts_host(self, header: str) -> bool:
        """DNS-rebinding defence: the Host header must name this server, not some web site."""
        match = HOST_HEADER.fullmatch(header.strip().lower())
        if match is None or int(match.group(2) or 80) != self.port:
            return False
        name = match.group(1)
        return name in self.host_names or (self.any_address and _is_ip_literal(name))


def _host_form(host: str) -> str:
    """A host as it appears in a Host header: lower case, IPv6 in brackets."""
    return f"[{host.lower()}]" if ":" in host else host.lower()


def _is_ip_literal(name: str) -> bool:
    """An address typed in the address bar reaches only that machine, so no rebinding through it."""
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _host_names(host: str, bound: ipaddress.IPv4Address | ipaddress.IPv6Address) -> set[str]:
    names = {_host_form(host), _host_form(str(bound))}
    if bound.is_loopback or bound.is_unspecified:
        names |= {"localhost", "127.0.0.1", "[::1]"}
    if bound.is_unspecified:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names


def make_server(spool, host: str = "127.0.0.1", port: int = 8080) -> DashboardServer:
    """A bound server, not yet serving (port 0 picks a free port: see `.port` and `.url`)."""
    try:
        return DashboardServer(spool, host, port)
    except OSError as exc:
        raise QueueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(spool, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until Ctrl-C, then return normally."""
    server = make_server(spool, host, port)
    print(f"queuectl dashboard on {server.url} (spool {spool.root}); Ctrl-C stops it", flush=True)
    if not server.loopback:
        print(f"queuectl: warning: listening on {host}, beyond this machine: whoever can reach "
              f"port {server.port} sees every job's command and log and can retry dead jobs "
              f"(there is no login)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- requests ------------------------------------------------------------------


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer

    def version_string(self) -> str:
        return "queuectl-dashboard"  # no Python version for scanners to match

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            if not self.server.accepts_host(self.headers.get("Host", "")):
                raise HttpError(421, f"this dashboard answers only to {self.server.url}")
            url = urlsplit(self.path)
            parts = [unquote(part) for part in url.path.split("/")[1:]]
            allowed, action, args = self._route(parts)
            if method != allowed:
                raise HttpError(405, f"use {allowed} here", {"Allow": allowed})
            if method == "POST":
                self._check_same_origin()
            action(parse_qs(url.query), *args)
        except HttpError as exc:
            self._send_json(exc.status, {"error": str(exc)}, exc.headers)
        except JobNotFound as exc:
            self._send_json(404, {"error": str(exc)})
        except (WrongState, InvalidJob) as exc:
            self._send_json(409, {"error": str(exc)})
        except QueueError as exc:
            self._send_json(500, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser left; nothing to answer
        except Exception:
            traceback.print_exc()
            self._send_json(500, {"error": "internal error; see the dashboard's stderr"})

    def _route(self, parts: list[str]) -> tuple[str, Callable[..., None], tuple[str, ...]]:
        """(method, handler, path arguments) for a path; 404 when there is none."""
        match parts:
            case [""]:
                return "GET", self._page, ()
            case ["jobs", job_id] if is_valid_id(job_id):
                return "GET", self._page, ()
            case ["static", name] if name in STATIC_TYPES:
                return "GET", self._static, (name,)
            case ["metrics"]:
                return "GET", self._metrics, ()
            case ["api", "status"]:
                return "GET", self._status, ()
            case ["api", "jobs"]:
                return "GET", self._jobs, ()
            case ["api", "jobs", job_id]:
                return "GET", self._job, (job_id,)
            case ["api", "jobs", job_id, "log"]:
                return "GET", self._log, (job_id,)
            case ["api", "jobs", job_id, "retry"]:
                return "POST", self._retry, (job_id,)
            case ["api", "jobs", job_id, "cancel"]:
                return "POST", self._cancel, (job_id,)
            case ["api", "dlq", "retry-all"]:
                return "POST", self._retry_all, ()
            case ["api", "pause"]:
                return "POST", self._pause, ("pause",)
            case ["api", "resume"]:
                return "POST", self._pause, ("resume",)
        raise HttpError(404, "no such page")

    def _check_same_origin(self) -> None:
        """Refuse POSTs another site could send: no token, or an Origin that is not the page's."""
        origin = self.headers.get("Origin", "")
        if origin.lower() != "http://" + self.headers.get("Host", "").strip().lower():
            raise HttpError(403, "cross-origin request refused (missing or foreign Origin)")
        token = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            raise HttpError(403, f"missing or wrong {TOKEN_HEADER}; reload the page")

    # -- pages -----------------------------------------------------------------

    def _page(self, query: dict) -> None:
        # no-store: the page carries the token of this process only
        self._send(200, self.server.page, "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def _static(self, query: dict, name: str) -> None:
        self._send(200, self.server.static[name], STATIC_TYPES[name], {"Cache-Control": "no-cache"})

    def _metrics(self, query: dict) -> None:
        # The long-lived scanner counts the settles seen between scrapes (queuectl/metrics.py).
        text = metrics.render(self.server.spool, self.server.scanner)
        self._send(200, text.encode(), metrics.CONTENT_TYPE)

    # -- API -------------------------------------------------------------------

    def _status(self, query: dict) -> None:
        spool = self.server.spool
        snapshot = self.server.scanner.scan()
        now = time.time()
        self._send_json(200, {"spool": spool.root, "now": now, "counts": snapshot.counts,
                              "workers": registry.records(spool),
                              "schedules": upcoming_schedules(spool),
                              "throughput": throughput(snapshot, now),
                              "paused": workflow.is_paused(spool), "groups": workflow.groups(spool),
                              "resources": host_resources.overview(spool)})

    def _jobs(self, query: dict) -> None:
        state = _text_param(query, "state")
        if state and state not in STATES:
            raise HttpError(400, f"unknown state {state!r}; valid states: {', '.join(STATES)}")
        search = _text_param(query, "q").lower()
        offset = _int_param(query, "offset", 0, 0, 10**9)
        limit = _int_param(query, "limit", PAGE_SIZE, 1, PAGE_SIZE_MAX)
        spool = self.server.spool
        folder_of = {name: folder for folder in ([state] if state else STATES)
                     for name in spool.names(folder)
                     if not search or search in id_of(name).lower()}
        # Newest id first; only the requested page is read from disk.
        end = offset + limit
        newest = (heapq.nlargest(end, folder_of) if end <= HEAP_PAGES_END
                  else sorted(folder_of, reverse=True))
        page = newest[offset:end]
        jobs = [job_summary(workflow.annotate(spool, job))
                for name in page if (job := spool.read(folder_of[name], name))]
        self._send_json(200, {"total": len(folder_of), "offset": offset, "limit": limit, "jobs": jobs})

    def _job(self, query: dict, job_id: str) -> None:
        spool = self.server.spool
        self._send_json(200, workflow.annotate(spool, spool.get(_checked_id(job_id))))

    def _log(self, query: dict, job_id: str) -> None:
        spool = self.server.spool
        tail = _int_param(query, "tail", LOG_TAIL, 1, LOG_TAIL_MAX)
        data = spool.read_log(_checked_id(job_id), tail_bytes=tail)
        try:
            size = os.stat(spool.log_path(job_id)).st_size
        except FileNotFoundError:
            size = 0
        text = data.decode("utf-8", "replace")
        truncated = len(data) >= tail and size > tail
        if truncated:
            text = text.partition("\n")[2]  # the first line is cut somewhere in its middle
        self._send_json(200, {"id": job_id, "size": size, "truncated": truncated, "text": text})

    def _retry(self, query: dict, job_id: str) -> None:
        job = lifecycle.dlq_retry(self.server.spool, _checked_id(job_id))
        self._send_json(200, {"job": job_summary(job)})

    def _cancel(self, query: dict, job_id: str) -> None:
        previous = lifecycle.cancel(self.server.spool, _checked_id(job_id))
        self._send_json(200, {"id": job_id, "was": previous})

    def _pause(self, query: dict, action: str) -> None:
        """Pause or resume (`action`) the spool, or the group named by `group`."""
        pause = action == "pause"
        group = _text_param(query, "group") or None
        spool = self.server.spool
        if group is not None:
            workflow.check_group(group)  # InvalidJob: 409 with the reason
        (workflow.pause if pause else workflow.resume)(spool, group)
        self._send_json(200, {"group": group, "paused": workflow.is_paused(spool, group)})

    def _retry_all(self, query: dict) -> None:
        """Retry dead jobs in id order after the cursor `after` until the time budget is spent.

        Each retry is a few fsyncs, so all of a big DLQ cannot fit in one fast
        call: the answer's `next` is the cursor for the next call, null when done.
        """
        after = _text_param(query, "after")
        spool = self.server.spool
        dead = sorted(id_of(name) for name in spool.names("dead"))
        deadline = time.monotonic() + RETRY_ALL_BUDGET
        retried, skipped, cursor = 0, 0, None
        errors: list[str] = []
        for job_id in dead[bisect.bisect_right(dead, after):]:
            if cursor is not None and time.monotonic() > deadline:
                break  # after at least one job, so every call makes progress
            cursor = job_id
            try:
                lifecycle.dlq_retry(spool, job_id)
                retried += 1
            except QueueError as exc:
                skipped += 1
                if len(errors) < 10:
                    errors.append(str(exc))
        else:
            cursor = None
        self._send_json(200, {"retried": retried, "skipped": skipped, "errors": errors, "next": cursor})

    # -- responses -------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        # "<" escaped too: even a response someone opens as HTML cannot start a tag
        body = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8",
                   {"Cache-Control": "no-store", **(headers or {})})

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        # The page polls every 2 s; only refusals and errors are worth a line on stderr.
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


# -- helpers -------------------------------------------------------------------


def _checked_id(job_id: str) -> str:
    if not is_valid_id(job_id):
        raise HttpError(400, "invalid job id: use 1-128 characters of A-Z a-z 0-9 . _ - "
                             "not starting with '.'")
    return job_id


def _text_param(query: dict, name: str) -> str:
    value = query.get(name, [""])[-1]
    if len(value) > 200:
        raise HttpError(400, f"{name} is too long")
    return value


def _int_param(query: dict, name: str, default: int, low: int, high: int) -> int:
    text = _text_param(query, name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name} must be between {low} and {high}")
    return value


def job_summary(job: dict) -> dict:
    """What a list row shows; long text is clipped, the detail view has it whole."""
    summary = {field: job.get(field) for field in LIST_FIELDS}
    for field in ("command", "last_error"):
        value = job.get(field)
        summary[field] = value[:TEXT_CLIP] if isinstance(value, str) else value
    return summary
