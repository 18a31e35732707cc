"""Disk room reserved ahead of a busy log's writes: taken where it pays, never seen by readers, given back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor._host import logs
from supervisor._host.fileroom import release_room, reserve_room, room_helps
from supervisor._host.logs import RotatingLogFile


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture
def ext_dir(tmp_path: Path) -> Path:
    with open(tmp_path / "probe", "wb") as probe:
        if not room_helps(probe.fileno()):
            pytest.skip(f"{tmp_path} is not on ext2/3/4, the only filesystem where disk room is reserved")
    return tmp_path


def test_room_is_reserved_past_the_end_and_given_back(ext_dir: Path) -> None:
    path = ext_dir / "x.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"line\n")
        assert reserve_room(fd, 5, 4 << 20)
        assert os.fstat(fd).st_size == 5  # readers see what was written, nothing more
        assert allocated(path) >= 4 << 20
        release_room(fd)
        assert os.fstat(fd).st_size == 5
        assert allocated(path) < 64 * 1024
    finally:
        os.close(fd)
    assert path.read_bytes() == b"line\n"


def test_tmpfs_is_not_asked(tmp_path: Path) -> None:
    """There the room would be memory held for nothing: tmpfs has no delayed allocation to save."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm (tmpfs) on this host")
    with open(shm / f"topovisor-room-{os.getpid()}", "wb") as probe:
        try:
            assert not room_helps(probe.fileno())
        finally:
            os.unlink(probe.name)


def test_a_busy_log_reserves_ahead_and_leaves_nothing_reserved_behind(ext_dir: Path) -> None:
    log = ext_dir / "x.log"
    sink = RotatingLogFile(log, max_bytes=3 << 20, backups=2)
    quiet = b"a quiet line\n" * 100
    sink.write_lines(quiet)
    assert allocated(log) < 64 * 1024, "a quiet writer's small writes reserved room"
    batch = (b"x" * 199 + b"\n") * 2600  # 520 KB in one batch: a busy writer
    sink.write_lines(batch)
    assert log.stat().st_size == len(quiet) + len(batch)
    assert allocated(log) >= len(quiet) + len(batch) + (1 << 20), "no room reserved ahead of a busy writer"
    for _ in range(6):  # past the rotation: the backup gets back its room
        sink.write_lines(batch)
    backup = log.with_name("x.log.1")
    assert backup.is_file()
    assert allocated(backup) < backup.stat().st_size + 64 * 1024
    sink.close()
    assert allocated(log) < log.stat().st_size + 64 * 1024
    text = b"".join(p.read_bytes() for p in (backup, log))
    assert text == quiet + batch * 7  # the reservations never showed in what was written


class FakeRoom:
    """``fileroom`` as the log file sees it, on any filesystem: what was asked, what was given back."""

    def __init__(self, answer: bool | None, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answer = answer
        self.reserved: list[tuple[int, int]] = []
        self.released = 0
        monkeypatch.setattr(logs, "room_helps", lambda fd: True)
        monkeypatch.setattr(logs, "reserve_room", self.reserve)
        monkeypatch.setattr(logs, "release_room", self.release)

    def reserve(self, fd: int, offset: int, length: int) -> bool | None:
        self.reserved.append((offset, offset + length))
        return self.answer

    def release(self, fd: int) -> None:
        self.released += 1


BATCH = (b"y" * 99 + b"\n") * 3000  # 300 KB: a busy writer's batch


def test_room_is_given_back_at_rotation_close_and_after_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = FakeRoom(True, monkeypatch)
    sink = RotatingLogFile(tmp_path / "x.log", max_bytes=1_000_000, backups=1)
    sink.write_lines(BATCH)
    assert room.reserved == [(0, 1_000_000)]  # the batch and 2 MiB more, but never past the rotation
    for _ in range(3):  # 1.2 MB: rotates once, between whole batches
        sink.write_lines(BATCH)
    assert room.reserved == [(0, 1_000_000)] and room.released == 1
    monkeypatch.setattr(logs, "_REOPEN_INTERVAL_SECONDS", 0.0)
    real_write = os.write

    def full_disk(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    sink.write_lines(BATCH)  # an outage: the file is reopened at the next write, its room given back first
    monkeypatch.setattr(os, "write", real_write)
    assert sink.error is not None
    assert room.reserved[-1] == (200_000, 1_000_000)  # the new file reserved for itself
    sink.write_lines(BATCH)
    assert sink.error is None and room.released == 2
    sink.close()
    assert room.released == 3


def test_a_refused_reservation_is_given_back_and_asked_again_only_past_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk may keep part of a refused reservation: it is given back like the rest."""
    room = FakeRoom(False, monkeypatch)
    sink = RotatingLogFile(tmp_path / "x.log", max_bytes=50_000_000, backups=1)
    for _ in range(8):  # 2.4 MB: past the first reservation's end once
        sink.write_lines(BATCH)
    assert len(room.reserved) == 2
    sink.close()
    assert room.released == 1
    assert (tmp_path / "x.log").read_bytes() == BATCH * 8


def test_a_file_that_cannot_have_room_is_asked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ext2, or an ext3 file without extents: EOPNOTSUPP each time it is asked."""
    room = FakeRoom(None, monkeypatch)
    sink = RotatingLogFile(tmp_path / "x.log", max_bytes=50_000_000, backups=1)
    for _ in range(20):
        sink.write_lines(BATCH)
    sink.close()
    assert len(room.reserved) == 1 and room.released == 0
