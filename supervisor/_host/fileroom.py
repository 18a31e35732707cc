"""Disk room reserved past a busy log file's end, so its appends land in blocks the file already has.

On ext4 a buffered append to a block the file does not have yet takes a delayed-allocation reservation per
4 KiB page (quota and free-space counters, the extent status tree): measured here, a sixth to a quarter of
the system time of a pump writing 500 MB/s. ``fallocate(FALLOC_FL_KEEP_SIZE)`` ahead of the writes takes
that once per couple of MiB and leaves the file's size, and so what every reader sees, as it was. Truncating
the file to its own size gives back what was not written into (at rotation and close).

Only ext2/3/4 are asked, where it was measured: tmpfs would hold the room in memory, and others were not
measured (XFS reserves past the end by itself; copy-on-write ones allocate at each write). Python has no
``fallocate`` with a mode (``os.posix_fallocate`` grows the file), so libc's is called through ctypes;
where it or ``fstatfs`` is missing, nothing is reserved and the writes go on as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from typing import Any

__all__ = ["release_room", "reserve_room", "room_helps"]

_FALLOC_FL_KEEP_SIZE = 0x01
_EXT_SUPER_MAGIC = 0xEF53  #: ext2, ext3 and ext4 share it
_CANNOT = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})  #: the file cannot, however often asked
_STATFS_SIZE = 256  #: ``struct statfs`` is 120 bytes on 64-bit Linux; its first field is ``f_type``


def _libc() -> tuple[Any, Any] | None:
    """(``fallocate`` with 64-bit offsets, ``fstatfs``), or None where libc lacks them (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fstatfs = libc.fstatfs
    except (OSError, AttributeError):
        return None
    # fallocate64 takes 64-bit offsets everywhere; plain fallocate does only where a long is 64 bits
    fallocate = getattr(libc, "fallocate64", None)
    if fallocate is None and ctypes.sizeof(ctypes.c_long) == 8:
        fallocate = getattr(libc, "fallocate", None)
    if fallocate is None:
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
    return fallocate, fstatfs


_FALLOCATE, _FSTATFS = _libc() or (None, None)


def room_helps(fd: int) -> bool:
    """Whether ``fd``'s filesystem is one where reserving ahead was measured to pay (ext2/3/4)."""
    if _FSTATFS is None:
        return False
    buffer = ctypes.create_string_buffer(_STATFS_SIZE)
    if _FSTATFS(fd, buffer) != 0:
        return False
    return ctypes.c_long.from_buffer(buffer).value == _EXT_SUPER_MAGIC


def reserve_room(fd: int, offset: int, length: int) -> bool | None:
    """Allocate ``length`` bytes of ``fd`` from ``offset`` without changing its size.

    True when reserved; False when not this time (a full disk or quota, which may have kept part of it: the
    write itself will say so); None when the file cannot have room reserved (ext2, an ext3 file without
    extents), so the caller stops asking."""
    if _FALLOCATE is None:
        return None
    if _FALLOCATE(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    return None if ctypes.get_errno() in _CANNOT else False


def release_room(fd: int) -> None:
    """Give back the blocks reserved past the end: truncating a file to its own size frees them.

    Between the ``fstat`` and the truncation, bytes appended by another process (``echo >> x.log``) would be
    cut: the supervisor is the file's only writer, and this runs on its one event-loop thread."""
    with contextlib.suppress(OSError):  # a file we cannot truncate keeps a few MiB too many: harmless
        os.ftruncate(fd, os.fstat(fd).st_size)
