"""files.atomic_write: the content arrives whole, nothing temporary is left, a failed write keeps
the old file, bad content is refused with one line naming it."""

import os

import pytest

from lemmse_lite.files import atomic_write


def test_text_and_bytes_arrive_whole_and_no_temporary_is_left(tmp_path):
    target = tmp_path / "sub" / "r.json"          # the folder is created
    assert atomic_write(target, "é{}\n") == target
    assert target.read_bytes() == "é{}\n".encode()
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(target.parent) == ["r.json"]


def test_a_failed_replace_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "r.txt"
    atomic_write(target, "old")

    def refuse(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.txt"]       # the temporary is removed


def test_content_of_another_type_is_refused():
    with pytest.raises(TypeError, match="content must be str or bytes, got dict"):
        atomic_write("unused", {"a": 1})
