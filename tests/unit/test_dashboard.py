"""The dashboard's HTTP API against a real server on a free port, in a thread, on a temporary spool."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from support.dashboard import exists, get, live_worker, place, post, request, running_dashboard

from queuectl.core.errors import QueueError
from queuectl.dashboard import server as server_module
from queuectl.dashboard.server import make_server, serve


@pytest.fixture
def dashboard(spool):
    with running_dashboard(spool) as server:
        yield server


# -- the page and static files ----------------------------------------------------


def test_page_carries_the_token_and_strict_headers(dashboard):
    reply = get(dashboard, "/")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert f'<meta name="queuectl-token" content="{dashboard.token}">' in reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["X-Frame-Options"] == "DENY"
    # CSP forbids inline script, so the page must have none
    assert re.findall(r"<script[^>]*>", reply.text) == ['<script src="/static/app.js">']
    assert "style=" not in reply.text


@pytest.mark.parametrize("name, kind", [("app.js", "text/javascript"), ("style.css", "text/css"),
                                        ("favicon.svg", "image/svg+xml")])
def test_static_files(dashboard, name, kind):
    reply = get(dashboard, f"/static/{name}")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith(kind)
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/static/index.html", "/static/../server.py", "/static/..%2Fserver.py",
                                  "/static/", "/api", "/api/nothing", "/favicon.ico"])
def test_unknown_paths_are_404(dashboard, path):
    reply = get(dashboard, path)
    assert reply.status == 404
    assert "error" in reply.json()


def test_app_js_never_writes_html():
    """The page builds every element with textContent and text nodes; no HTML parsing of data."""
    script = (server_module.resources.files("queuectl.dashboard") / "static" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


# -- status ---------------------------------------------------------------------------


def test_status_counts_workers_and_chart(spool, dashboard):
    now = time.time()
    for number in range(3):
        place(spool, "pending", f"p{number}")
    place(spool, "processing", "running1")
    place(spool, "completed", "done-now", settled_at=now)
    place(spool, "completed", "done-10m", settled_at=now - 600)
    place(spool, "completed", "done-2h", settled_at=now - 7200)
    place(spool, "failed", "failed-now", settled_at=now)
    place(spool, "dead", "dead-now", settled_at=now)
    with live_worker(spool, "w1", "running1"):
        status = get(dashboard, "/api/status").json()
    assert status["counts"] == {"pending": 3, "processing": 1, "completed": 3, "failed": 1, "dead": 1}
    assert status["spool"] == spool.root
    assert [(w["name"], w["job"]) for w in status["workers"]] == [("w1", "running1")]
    chart = status["throughput"]
    assert len(chart) == 60
    assert [b["minute"] for b in chart] == sorted(b["minute"] for b in chart)
    assert chart[-1]["minute"] <= status["now"] < chart[-1]["minute"] + 60

    def bucket(moment):
        return next(b for b in chart if b["minute"] <= moment < b["minute"] + 60)
    assert (bucket(now)["completed"], bucket(now)["failed"]) == (1, 2)
    assert bucket(now - 600)["completed"] == 1
    assert sum(b["completed"] for b in chart) == 2  # the one from 2 h ago is out of the hour


def test_status_sees_changes_at_once(spool, dashboard):
    assert get(dashboard, "/api/status").json()["counts"]["pending"] == 0
    place(spool, "pending", "new1")
    assert get(dashboard, "/api/status").json()["counts"]["pending"] == 1
    os.rename(os.path.join(spool.dir("pending"), "new1.json"), os.path.join(spool.dir("completed"), "new1.json"))
    counts = get(dashboard, "/api/status").json()["counts"]
    assert (counts["pending"], counts["completed"]) == (0, 1)


def test_status_lists_schedules_soonest_first(spool, dashboard):
    from queuectl.features import schedules
    assert get(dashboard, "/api/status").json()["schedules"] == []
    schedules.add(spool, "yearly", {"cron": "0 0 1 1 *", "tz": "Europe/Berlin", "job": {"command": "<b>x</b>"}})
    schedules.add(spool, "often", {"every": "10s", "job": {"command": "true"}})
    schedules.add(spool, "held", {"every": "10s", "paused": True, "job": {"command": "true"}})
    listed = get(dashboard, "/api/status").json()["schedules"]
    assert [entry["name"] for entry in listed] == ["often", "yearly", "held"]
    assert listed[1]["cron"] == "0 0 1 1 *" and listed[1]["tz"] == "Europe/Berlin"
    assert listed[1]["command"] == "<b>x</b>" and listed[1]["next_run"].endswith("T23:00:00.000Z")
    assert listed[2]["paused"] is True and listed[2]["next_run"] is None


# -- job listings ---------------------------------------------------------------------


def test_jobs_are_paged_newest_id_first(spool, dashboard):
    for number in range(30):
        place(spool, ("pending", "completed", "dead")[number % 3], f"job-{number:02d}")
    first = get(dashboard, "/api/jobs?limit=10").json()
    assert first["total"] == 30
    assert [job["id"] for job in first["jobs"]] == [f"job-{n:02d}" for n in range(29, 19, -1)]
    last = get(dashboard, "/api/jobs?limit=10&offset=25").json()
    assert [job["id"] for job in last["jobs"]] == [f"job-{n:02d}" for n in range(4, -1, -1)]
    assert get(dashboard, "/api/jobs?offset=30").json()["jobs"] == []
    default = get(dashboard, "/api/jobs").json()
    assert (default["limit"], len(default["jobs"])) == (25, 25)
    row = first["jobs"][0]
    assert row["state"] == "dead" and row["command"] == "echo hi" and "history" not in row


def test_deep_pages_keep_the_order(spool, dashboard, monkeypatch):
    """Deep pages come from a sort instead of a heap: the same order."""
    for number in range(30):
        place(spool, "completed", f"job-{number:02d}")
    from_heap = get(dashboard, "/api/jobs?offset=10&limit=10").json()
    monkeypatch.setattr(server_module, "HEAP_PAGES_END", 5)
    from_sort = get(dashboard, "/api/jobs?offset=10&limit=10").json()
    assert from_sort == from_heap
    assert [job["id"] for job in from_sort["jobs"]] == [f"job-{n:02d}" for n in range(19, 9, -1)]


def test_state_filter_and_id_search(spool, dashboard):
    place(spool, "pending", "backup-home")
    place(spool, "dead", "backup-db")
    place(spool, "dead", "report")
    dead = get(dashboard, "/api/jobs?state=dead").json()
    assert {job["id"] for job in dead["jobs"]} == {"backup-db", "report"} and dead["total"] == 2
    found = get(dashboard, "/api/jobs?q=BACKUP").json()
    assert [job["id"] for job in found["jobs"]] == ["backup-home", "backup-db"]
    assert get(dashboard, "/api/jobs?q=backup&state=dead").json()["total"] == 1
    assert get(dashboard, "/api/jobs?q=json").json()["total"] == 0  # the file suffix is not part of the id


@pytest.mark.parametrize("query", ["state=finished", "limit=0", "limit=201", "limit=ten", "offset=-1",
                                   "q=" + "x" * 201])
def test_bad_listing_parameters_are_400(dashboard, query):
    reply = get(dashboard, f"/api/jobs?{query}")
    assert reply.status == 400
    assert reply.json()["error"]


def test_long_text_is_clipped_in_listings_not_in_the_job(spool, dashboard):
    place(spool, "dead", "long", command="echo " + "x" * 5000)
    assert len(get(dashboard, "/api/jobs").json()["jobs"][0]["command"]) == 300
    assert len(get(dashboard, "/api/jobs/long").json()["command"]) == 5005


# -- one job and its log ---------------------------------------------------------------


def test_one_job_whole(spool, dashboard):
    history = [{"attempt": 1, "exit_code": 3, "error": "exit code 3"}]
    place(spool, "failed", "job1", attempts=1, history=history, mine={"team": "ops"})
    job = get(dashboard, "/api/jobs/job1").json()
    assert (job["id"], job["state"], job["history"], job["mine"]) == ("job1", "failed", history, {"team": "ops"})
    missing = get(dashboard, "/api/jobs/nope")
    assert missing.status == 404 and "nope" in missing.json()["error"]


@pytest.mark.parametrize("path", [
    "/api/jobs/..%2F..%2Fetc%2Fpasswd",
    "/api/jobs/..%2F..%2Fetc%2Fpasswd/log",
    "/api/jobs/..%2Fconfig/log",
    "/api/jobs/.hidden",
    "/api/jobs/a%2Fb",
    "/api/jobs/%00x",
    "/api/jobs/x%0Ay/log",
    "/api/jobs/" + "a" * 129,
])
def test_bad_ids_are_400(dashboard, path):
    reply = get(dashboard, path)
    assert reply.status == 400
    assert "invalid job id" in reply.json()["error"]


def test_no_path_leaves_the_spool(spool, dashboard):
    with open(os.path.join(spool.root, "notes.json"), "w") as handle:
        handle.write('{"command": "secret"}')
    for path in ("/api/jobs/../../etc/passwd", "/api/jobs/..%2Fnotes", "/api/jobs/../notes",
                 "/api/jobs/..%2Fnotes/log", "/static/..%2F..%2Fnotes.json", "/../../etc/passwd"):
        reply = get(dashboard, path)
        assert reply.status in (400, 404), path
        assert b"root:" not in reply.body and b"secret" not in reply.body


def test_log_tail(spool, dashboard):
    place(spool, "completed", "chatty")
    lines = [f"line {number}\n" for number in range(10000)]
    with open(spool.log_path("chatty"), "w") as handle:
        handle.writelines(lines)
    size = sum(len(line) for line in lines)
    tail = get(dashboard, "/api/jobs/chatty/log?tail=1000").json()
    assert tail["truncated"] and tail["size"] == size
    assert tail["text"].endswith("line 9999\n") and len(tail["text"]) <= 1000
    assert tail["text"].startswith("line ")  # the cut first line is dropped
    whole = get(dashboard, "/api/jobs/chatty/log").json()
    assert whole["text"] == "".join(lines)[-65536:].partition("\n")[2] and whole["truncated"]
    place(spool, "pending", "quiet")
    assert get(dashboard, "/api/jobs/quiet/log").json() == {"id": "quiet", "size": 0, "truncated": False,
                                                           "text": ""}
    assert get(dashboard, "/api/jobs/ghost/log").status == 404
    assert get(dashboard, "/api/jobs/chatty/log?tail=0").status == 400


def test_log_that_is_not_utf8_is_shown_not_crashed_on(spool, dashboard):
    place(spool, "completed", "binary")
    with open(spool.log_path("binary"), "wb") as handle:
        handle.write(b"ok \xff\xfe done\n")
    assert get(dashboard, "/api/jobs/binary/log").json()["text"] == "ok \ufffd\ufffd done\n"


# -- escaping --------------------------------------------------------------------------


def test_job_text_is_escaped(spool, dashboard):
    payload = "<script>alert(1)</script>"
    place(spool, "dead", "xss", command=payload, last_error='<img src=x onerror="alert(2)">')
    page = get(dashboard, "/")
    assert "alert" not in page.text  # no job data is rendered into the HTML at all
    for path in ("/api/jobs", "/api/jobs/xss", "/api/jobs?state=dead"):
        reply = get(dashboard, path)
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
        assert b"<" not in reply.body  # even opened as HTML, JSON cannot start a tag
    assert get(dashboard, "/api/jobs/xss").json()["command"] == payload


def test_the_token_is_html_escaped_in_the_page(spool, monkeypatch):
    monkeypatch.setattr(server_module.secrets, "token_urlsafe", lambda size: '"><script>x</script>')
    with running_dashboard(spool) as server:
        page = get(server, "/").text
    assert "<script>x</script>" not in page
    assert 'content="&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in page


# -- retrying ----------------------------------------------------------------------------


def test_retry_moves_a_dead_job_back_to_pending(spool, dashboard):
    place(spool, "dead", "job1", attempts=4, max_retries=3, last_error="exit code 1")
    reply = post(dashboard, "/api/jobs/job1/retry")
    assert reply.status == 200
    assert reply.json()["job"]["state"] == "pending"
    assert exists(spool, "pending", "job1") and not exists(spool, "dead", "job1")
    job = spool.get("job1")
    assert (job["attempts"], job["last_error"]) == (0, None)


def test_retry_refusals(spool, dashboard):
    place(spool, "pending", "waiting")
    place(spool, "dead", "broken", command=None)
    assert post(dashboard, "/api/jobs/waiting/retry").status == 409
    assert post(dashboard, "/api/jobs/ghost/retry").status == 404
    refused = post(dashboard, "/api/jobs/broken/retry")
    assert refused.status == 409 and "never a valid job" in refused.json()["error"]
    assert exists(spool, "dead", "broken")
    assert post(dashboard, "/api/jobs/..%2Fx/retry").status == 400


def test_retry_all(spool, dashboard):
    for name in ("a", "b", "c", "d"):
        place(spool, "dead", name)
    place(spool, "dead", "broken", command=None)
    reply = post(dashboard, "/api/dlq/retry-all").json()
    assert (reply["retried"], reply["skipped"], reply["next"]) == (4, 1, None)
    assert "never a valid job" in reply["errors"][0]
    assert spool.counts()["pending"] == 4 and spool.names("dead") == ["broken.json"]


def test_retry_all_works_in_batches_with_a_cursor(spool, dashboard, monkeypatch):
    monkeypatch.setattr(server_module, "RETRY_ALL_BUDGET", 0.0)  # one job per call
    for name in ("a", "b", "c"):
        place(spool, "dead", name)
    cursors = []
    cursor = ""
    while True:
        reply = post(dashboard, f"/api/dlq/retry-all?after={cursor}").json()
        assert reply["retried"] == 1
        cursor = reply["next"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert cursors == ["a", "b"]
    assert spool.counts()["dead"] == 0
    place(spool, "dead", "d")
    assert post(dashboard, "/api/dlq/retry-all?after=d").json() == {
        "retried": 0, "skipped": 0, "errors": [], "next": None}
    assert exists(spool, "dead", "d")


# -- security rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("token, origin", [
    (None, "valid"),                             # no token
    ("wrong", "valid"),                          # a guessed token
    ("", "valid"),
    ("valid", None),                             # no Origin
    ("valid", "http://evil.example"),            # another site
    ("valid", "null"),                           # a sandboxed frame or a file: page
    ("valid", "https://127.0.0.1:{port}"),       # another scheme
    ("valid", "http://127.0.0.1:1"),             # another port
    ("valid", "http://127.0.0.1.evil.example:{port}"),
])
def test_post_without_token_or_from_another_origin_is_403(spool, dashboard, token, origin):
    place(spool, "dead", "job1")
    origin = origin.format(port=dashboard.port) if origin else origin
    for path in ("/api/jobs/job1/retry", "/api/dlq/retry-all"):
        reply = post(dashboard, path, token=token, origin=origin)
        assert reply.status == 403
        assert reply.json()["error"]
    assert exists(spool, "dead", "job1")


def test_cross_site_form_post_is_refused(spool, dashboard):
    """What a hostile page's <form method=post> sends: its own Origin, a form body, no token."""
    place(spool, "dead", "job1")
    reply = request(dashboard.port, "POST", "/api/dlq/retry-all", {
        "Origin": "http://attacker.example", "Content-Type": "application/x-www-form-urlencoded",
        "Sec-Fetch-Site": "cross-site"})
    assert reply.status == 403
    assert exists(spool, "dead", "job1")


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "127.0.0.1",
                                  "192.168.1.10:{port}", "localhost.evil.example:{port}", "", "[::2]:{port}"])
def test_foreign_host_header_is_refused(spool, dashboard, host):
    """DNS rebinding: a site whose name now points at 127.0.0.1 sends its own name as Host."""
    place(spool, "dead", "job1")
    host = host.format(port=dashboard.port)
    for path in ("/", "/api/status", "/api/jobs/job1", "/metrics"):
        reply = get(dashboard, path, Host=host)
        assert reply.status == 421
        assert dashboard.token not in reply.text and "job1" not in reply.text
    reply = post(dashboard, "/api/jobs/job1/retry", Host=host, origin=f"http://{host}")
    assert reply.status == 421
    assert exists(spool, "dead", "job1")


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_own_names_are_accepted(dashboard, host):
    assert get(dashboard, "/api/status", Host=host.format(port=dashboard.port)).status == 200


def test_post_from_localhost_page_is_accepted(spool, dashboard):
    place(spool, "dead", "job1")
    origin = f"http://localhost:{dashboard.port}"
    reply = post(dashboard, "/api/jobs/job1/retry", origin=origin, Host=f"localhost:{dashboard.port}")
    assert reply.status == 200


def test_host_check_when_bound_to_every_address(spool):
    server = make_server(spool, "0.0.0.0", 0)
    try:
        port = server.port
        assert server.accepts_host(f"192.168.1.10:{port}") and server.accepts_host(f"[fe80::1]:{port}")
        assert server.accepts_host(f"localhost:{port}")
        assert not server.accepts_host(f"evil.example:{port}")
        assert not server.accepts_host(f"192.168.1.10:{port + 1}")
    finally:
        server.server_close()


@pytest.mark.parametrize("path", ["/api/jobs/job1/retry", "/api/dlq/retry-all"])
def test_get_cannot_change_state(spool, dashboard, path):
    place(spool, "dead", "job1")
    reply = get(dashboard, path)
    assert reply.status == 405 and reply.headers["Allow"] == "POST"
    assert exists(spool, "dead", "job1")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_change_nothing(spool, dashboard, method):
    place(spool, "dead", "job1")
    reply = request(dashboard.port, method, "/api/jobs/job1/retry",
                    {"X-Queuectl-Token": dashboard.token, "Origin": f"http://127.0.0.1:{dashboard.port}"})
    assert reply.status in (405, 501)
    assert exists(spool, "dead", "job1")


def test_post_to_a_read_only_route_is_405(dashboard):
    reply = post(dashboard, "/api/status")
    assert reply.status == 405 and reply.headers["Allow"] == "GET"


def test_every_answer_has_the_security_headers(dashboard):
    for reply in (get(dashboard, "/api/status"), get(dashboard, "/nothing"), get(dashboard, "/", Host="x"),
                  post(dashboard, "/api/dlq/retry-all", token=None), get(dashboard, "/metrics")):
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'self'" in reply.headers["Content-Security-Policy"]


def test_each_process_has_its_own_token(spool):
    first = make_server(spool, "127.0.0.1", 0)
    second = make_server(spool, "127.0.0.1", 0)
    try:
        assert first.token != second.token and len(first.token) >= 32
    finally:
        first.server_close()
        second.server_close()


# -- metrics ------------------------------------------------------------------------------------

SAMPLE_LINE = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})? '
                         r'(NaN|[+-]Inf|-?[0-9.]+(e[+-]?[0-9]+)?)')


def parse_metrics(text: str) -> dict[str, float]:
    assert text.endswith("\n")
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP [a-z_]+ .+|TYPE [a-z_]+ (gauge|counter|summary))", line), line
            continue
        assert SAMPLE_LINE.fullmatch(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics(spool, dashboard):
    for number, duration in enumerate((1.0, 2.0, 3.0, 4.0)):
        place(spool, "completed", f"done{number}", last_duration=duration)
    place(spool, "failed", "again", last_duration=0.5)
    place(spool, "dead", "gone")
    place(spool, "pending", "next")
    with live_worker(spool, "w1", None):
        reply = get(dashboard, "/metrics")
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse_metrics(reply.text)
    assert samples['queuectl_jobs{state="completed"}'] == 4
    assert samples['queuectl_jobs{state="pending"}'] == 1
    assert samples['queuectl_jobs{state="processing"}'] == 0
    assert samples["queuectl_workers"] == 1
    assert samples["queuectl_completions_total"] == 4
    assert samples["queuectl_failures_total"] == 2
    assert samples["queuectl_job_duration_seconds_count"] == 5
    assert samples["queuectl_job_duration_seconds_sum"] == 10.5
    assert samples['queuectl_job_duration_seconds{quantile="0.5"}'] == 2.0
    assert samples['queuectl_job_duration_seconds{quantile="0.99"}'] == 4.0
    for kind in ("gauge", "counter", "summary"):
        assert f" {kind}\n" in reply.text


def test_metric_counters_only_grow(spool, dashboard):
    place(spool, "completed", "one")
    assert parse_metrics(get(dashboard, "/metrics").text)["queuectl_completions_total"] == 1
    place(spool, "completed", "two")
    os.unlink(os.path.join(spool.dir("completed"), "one.json"))  # purged
    samples = parse_metrics(get(dashboard, "/metrics").text)
    assert samples["queuectl_completions_total"] == 2
    assert samples['queuectl_jobs{state="completed"}'] == 1


def test_metrics_of_an_empty_spool(dashboard):
    samples = parse_metrics(get(dashboard, "/metrics").text)
    assert samples["queuectl_job_duration_seconds_count"] == 0
    assert get(dashboard, "/metrics").text.count("NaN") == 3


# -- serving ---------------------------------------------------------------------------------


def stop_at_once(server):
    raise KeyboardInterrupt


def test_serve_prints_the_url_and_stops_cleanly_on_ctrl_c(spool, monkeypatch, capsys):
    monkeypatch.setattr(server_module.DashboardServer, "serve_forever", stop_at_once)
    serve(spool, port=0)
    out, err = capsys.readouterr()
    assert re.search(r"http://127\.0\.0\.1:\d+/", out)
    assert err == ""


def test_serve_warns_when_reachable_from_other_machines(spool, monkeypatch, capsys):
    monkeypatch.setattr(server_module.DashboardServer, "serve_forever", stop_at_once)
    serve(spool, host="0.0.0.0", port=0)
    assert "warning" in capsys.readouterr().err


def test_busy_port_is_a_clear_error(spool, dashboard):
    with pytest.raises(QueueError, match="cannot listen on 127.0.0.1"):
        make_server(spool, "127.0.0.1", dashboard.port)


def test_cli_dashboard_serves_until_ctrl_c(spool_path):
    process = subprocess.Popen([sys.executable, "-m", "queuectl", "--spool", spool_path, "dashboard", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", banner)
        assert url, banner
        reply = request(int(url.group(1)), "GET", "/api/status")
        assert reply.status == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert "Traceback" not in err


@pytest.mark.parametrize("watch", [True, False], ids=["dashboard (inotify)", "one-shot (name and inode)"])
def test_a_job_back_under_its_name_on_the_same_inode_gets_its_new_settle_time(spool, watch):
    """ext4 gives a freed inode number to the next new file, so a job that failed, was retried and
    failed again between two scans can come back under its name on its old inode number. Here the
    same file leaves and comes back with a new settle time, which is what that looks like."""
    from support import put_job

    from queuectl.snapshot import Scanner
    put_job(spool.root, "failed", "again", attempts=1)
    failed, pending = spool.path("failed", "again"), spool.path("pending", "again")
    before, after = time.time() - 600, time.time() - 5
    os.utime(failed, (before, before))
    scanner = Scanner(spool, watch=watch)
    try:
        first = scanner.scan()
        assert first.settle_times["failed"]["again.json"][1] == pytest.approx(before)
        os.rename(failed, pending)
        os.utime(pending, (after, after))
        os.rename(pending, failed)
        second = scanner.scan()
    finally:
        scanner.close()
    seen = second.settle_times["failed"]["again.json"][1]
    if watch:
        assert seen == pytest.approx(after)
        assert second.settles_seen["failed"] == first.settles_seen["failed"] + 1
    else:  # what a one-shot command, or a spool other hosts share, cannot tell (snapshot.py)
        assert seen == pytest.approx(before)


def test_when_the_kernel_dropped_events_every_settled_file_is_looked_at_again(spool):
    """An inotify queue overflow (RESCAN) leaves no name trusted; unchanged files do not count twice."""
    from support import put_job

    from queuectl.snapshot import Scanner
    from queuectl.watch import RESCAN
    for job_id in ("one", "two"):
        put_job(spool.root, "dead", job_id)
    scanner = Scanner(spool)
    first = scanner.scan()
    stats = []
    real_lstat = os.lstat

    class Overflowed:
        def changes(self):
            return [RESCAN]

        def close(self):
            pass
    scanner._watch = Overflowed()
    try:
        os.lstat = lambda path, *args, **kwargs: (stats.append(path), real_lstat(path, *args, **kwargs))[1]
        second = scanner.scan()
    finally:
        os.lstat = real_lstat
    assert sorted(os.path.basename(path) for path in stats) == ["one.json", "two.json"]
    assert second.settles_seen == first.settles_seen
