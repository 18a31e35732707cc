"""Disk room reserved ahead of a busy log's writes: taken where it pays, never seen by readers, given back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
