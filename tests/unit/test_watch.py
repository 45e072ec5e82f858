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


class Lister:
    """A polling watch on a driven clock, with each folder's listings counted."""

    def __init__(self, tmp_path, monkeypatch, names=("pending", "completed")):
        self.paths = {name: tmp_path / name for name in names}
        for path in self.paths.values():
            path.mkdir()
        self.clock = [0.0]
        monkeypatch.setattr("queuectl.watch.time.monotonic", lambda: self.clock[0])
        self.watch = FolderWatch({name: str(path) for name, path in self.paths.items()}, poll=True)
        self.listed: list[str] = []
        real_list = watch_module._PollSource._list
        folders = {str(path): name for name, path in self.paths.items()}

        def counted(path):
            self.listed.append(folders[path])
            return real_list(path)
        monkeypatch.setattr(watch_module._PollSource, "_list", staticmethod(counted))

    def tick(self, seconds: float = watch_module.POLL_INTERVAL) -> set:
        self.clock[0] += seconds
        self.listed.clear()
        return set(self.watch.changes())


def test_polling_lists_a_folder_when_it_changed_and_once_more_a_listing_period_later(tmp_path, monkeypatch):
    lister = Lister(tmp_path, monkeypatch, names=("pending",))
    lister.tick(5)
    (lister.paths["pending"] / "a.json").write_text("1")
    assert lister.tick() == {("created", "pending", "a.json")} and lister.listed == ["pending"]
    assert lister.tick() == set() and lister.listed == []  # unchanged: a stat, no listing
    lister.tick(watch_module.FULL_LISTING)
    assert lister.listed == ["pending"]  # the change's tick is over: one more look
    for _ in range(12):
        assert lister.tick() == set() and lister.listed == []  # quiet: never listed again
    lister.watch.close()


def test_a_folders_cadence_decides_how_often_it_is_listed(tmp_path, monkeypatch):
    lister = Lister(tmp_path, monkeypatch)
    cadence = {"pending": watch_module.FULL_LISTING, "completed": None}
    lister.watch.set_cadence(cadence.get)
    lister.tick(5)
    assert lister.listed == ["pending"]  # a slow folder is listed at its first tick, a skipped one never
    first = lister.clock[0]
    (lister.paths["pending"] / "a.json").write_text("1")
    (lister.paths["completed"] / "done.json").write_text("1")
    seen = set()
    while lister.clock[0] + watch_module.POLL_INTERVAL < first + watch_module.FULL_LISTING:
        seen |= lister.tick()
        assert lister.listed == []  # changed, but not due: not even a stat
    seen |= lister.tick()
    assert lister.listed == ["pending"] and seen == {("created", "pending", "a.json")}
    cadence["completed"] = watch_module.POLL_INTERVAL
    # Looked at again: what landed while it was not looked at is reported.
    assert lister.tick() == {("created", "completed", "done.json")}
    lister.watch.close()


def test_inotify_ignores_a_cadence(folders):
    watch, paths = folders
    watch.set_cadence(lambda folder: None)
    (paths["pending"] / "a.json").write_text("1")
    assert ("closed", "pending", "a.json") in collect(watch, {("closed", "pending", "a.json")})
