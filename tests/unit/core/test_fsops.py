"""fsops: the file-system steps every state change is made of (docs/decisions/file-bytes.md)."""

from __future__ import annotations

import errno
import os

from queuectl.core import fsops


def test_a_folder_that_refuses_renameat2s_flags_is_asked_once_per_flag(tmp_path, monkeypatch):
    """NFS and FUSE refuse the flags on every call: the moves after the first refusal go straight to
    the fallback (link + unlink, os.replace), and still move the files as they should."""
    asked = []

    def refusing(src, dst, flags):
        asked.append((os.path.dirname(os.fsdecode(dst)), flags))
        return errno.EINVAL
    monkeypatch.setattr(fsops, "_renameat2", refusing)
    monkeypatch.setattr(fsops, "_refused", set(), raising=False)
    source, target = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    target.mkdir()
    for number in range(3):
        (source / f"{number}.json").write_text(str(number))
        fsops.rename_noreplace(str(source / f"{number}.json"), str(target / f"{number}.json"))
        (source / f"new-{number}").write_text(f"new {number}")
        fsops.replace(str(source / f"new-{number}"), str(target / f"{number}.json"))
    assert sorted(os.listdir(target)) == ["0.json", "1.json", "2.json"]
    assert [(target / f"{number}.json").read_text() for number in range(3)] == ["new 0", "new 1", "new 2"]
    assert os.listdir(source) == []
    assert sorted(asked) == sorted([(str(target), fsops._RENAME_NOREPLACE), (str(target), fsops._RENAME_EXCHANGE)])


def test_another_error_of_renameat2_is_raised_and_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setattr(fsops, "_renameat2", lambda src, dst, flags: errno.EACCES)
    monkeypatch.setattr(fsops, "_refused", set(), raising=False)
    (tmp_path / "a").write_text("a")
    for _ in range(2):
        try:
            fsops.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))
        except PermissionError:
            pass
        else:
            raise AssertionError("EACCES was not raised")
    assert fsops._refused == set()
