"""watch.FolderWatch: what changed in a worker's folders, read without threads on Linux."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time

import pytest
from support import wait_until

from queuectl import watch as watch_module
from queuectl.core.errors import SpoolError
from queuectl.watch import RESCAN, FolderWatch


def make_watch(tmp_path, monkeypatch, source: str):
    if source == "observer":  # as on a system without inotify
        def no_inotify(folders):
            raise ImportError("no inotify here")
        monkeypatch.setattr(watch_module, "_InotifySource", no_inotify)
    paths = {name: tmp_path / name for name in ("pending", "outside")}
    for path in paths.values():
        path.mkdir()
    return FolderWatch({"pending": str(paths["pending"])}), paths


@pytest.fixture
def folders(tmp_path, monkeypatch):
    watch, paths = make_watch(tmp_path, monkeypatch, "inotify")
    yield watch, paths
    watch.close()


def collect(watch: FolderWatch, wanted: set) -> set:
    """Changes until every wanted one has come (waiting with a deadline)."""
    seen: set = set()

    def arrived():
        watch.wait(0.5)
        seen.update(watch.changes())
        return wanted <= seen
    wait_until(arrived, timeout=20, interval=0, message=f"changes {wanted}")
    return seen


def test_files_written_renamed_in_moved_out_and_deleted(folders):
    watch, paths = folders
    (paths["pending"] / "written.json").write_text("{}")
    (paths["outside"] / "renamed.json").write_text("{}")
    os.rename(paths["outside"] / "renamed.json", paths["pending"] / "renamed.json")
    collect(watch, {("closed", "pending", "written.json"), ("moved", "pending", "renamed.json")})

    os.rename(paths["pending"] / "written.json", paths["outside"] / "written.json")
    os.unlink(paths["pending"] / "renamed.json")
    collect(watch, {("gone", "pending", "written.json"), ("gone", "pending", "renamed.json")})


def test_a_folder_made_inside_is_not_a_change_but_one_moved_in_is(folders):
    watch, paths = folders
    (paths["pending"] / "made").mkdir()
    (paths["outside"] / "moved").mkdir()
    os.rename(paths["outside"] / "moved", paths["pending"] / "moved")
    seen = collect(watch, {("moved", "pending", "moved")})
    assert not any(name == "made" for _, _, name in seen)


def test_without_inotify_the_observer_reports_files_landing_and_leaving(tmp_path, monkeypatch):
    watch, paths = make_watch(tmp_path, monkeypatch, "observer")
    try:
        (paths["outside"] / "renamed.json").write_text("{}")
        os.rename(paths["outside"] / "renamed.json", paths["pending"] / "renamed.json")
        landed = collect_any(watch, lambda change: change[1:] == ("pending", "renamed.json")
                             and change[0] != "gone")
        assert landed
        os.unlink(paths["pending"] / "renamed.json")
        collect_any(watch, lambda change: change == ("gone", "pending", "renamed.json"))
    finally:
        watch.close()


def collect_any(watch: FolderWatch, wanted) -> list:
    found: list = []

    def arrived():
        watch.wait(0.5)
        found.extend(change for change in watch.changes() if wanted(change))
        return found
    return wait_until(arrived, timeout=20, interval=0, message="a change")


def test_a_wake_from_another_thread_ends_a_wait(folders):
    watch, _ = folders
    started = time.monotonic()
    waker = threading.Thread(target=watch.wake)
    waker.start()
    watch.wait(30)
    waker.join()
    assert time.monotonic() - started < 30
    assert watch.changes() == []


def test_changes_lost_by_the_kernel_ask_for_a_rescan(tmp_path):
    with open("/proc/sys/fs/inotify/max_queued_events") as handle:
        limit = int(handle.read())
    folder = tmp_path / "pending"
    folder.mkdir()
    watch = FolderWatch({"pending": str(folder)})
    try:
        (folder / "a.json").touch()
        for number in range(limit // 2 + 10):  # two changes per rename, no file created
            names = ("a.json", "b.json") if number % 2 == 0 else ("b.json", "a.json")
            os.rename(folder / names[0], folder / names[1])
        assert RESCAN in watch.changes()
    finally:
        watch.close()


def test_an_inotify_limit_is_one_clear_error(tmp_path, monkeypatch):
    inotify = pytest.importorskip("watchdog.observers.inotify_c")

    def refuse(fd, path, mask):
        ctypes.set_errno(errno.ENOSPC)
        return -1
    monkeypatch.setattr(inotify, "inotify_add_watch", refuse)
    with pytest.raises(SpoolError, match="No space left on device.*fs.inotify.max_user_watches"):
        FolderWatch({"pending": str(tmp_path)})
