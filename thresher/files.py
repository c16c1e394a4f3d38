"""Reading a user's file safely: regular files only, size checked first, never blocking.

Every stage that opens an image (the scan, clean's report, the review server, the training
dataset) reads through `read_regular`, so the rule lives in one place:

- opened with O_NONBLOCK, so a FIFO can never block the open, and refused unless fstat says
  it is a regular file (FIFOs, sockets, devices such as /dev/zero behind a symlink);
- refused when larger than `max_bytes`, before a byte is read (a 3 GB sparse ".jpg");
- read at most `st_size + 1` bytes: a file that yields more than its size (a /proc or /sys
  pseudo-file, whose stat says 0) is refused rather than read without a bound.

A refusal is a `FileRefused` with a catalog status and a reason that never quotes the file's
content. Also here: how a file name that is not valid UTF-8 (kept losslessly in Python's
surrogate-escaped form) is shown to a person, and the one way a file is written all or
nothing (`atomic_write`: checkpoints, metrics, the rank records of ddp-check).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# Larger than any photo or scan a crawl holds (a 100 MP 16-bit TIFF is ~600 MB uncompressed,
# but crawled files are compressed); small enough that a worker never holds gigabytes.
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024


class FileRefused(Exception):
    """The file was not read; `status` is a catalog status (unreadable, oversized)."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_regular(path: Path | str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; FileRefused for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileRefused("unreadable", f"cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused("unreadable", f"not a regular file ({_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise FileRefused(
                "oversized",
                f"{st.st_size / 2**20:.0f} MiB exceeds max_file_bytes "
                f"({max_bytes / 2**20:.0f} MiB); not read",
            )
        chunks, want = [], st.st_size + 1
        while want > 0:
            chunk = os.read(fd, min(want, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        if want <= 0:
            raise FileRefused(
                "unreadable", "yields more bytes than its size says (a pseudo-file, or growing)"
            )
        return b"".join(chunks)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise FileRefused("unreadable", "read would block") from None
        raise FileRefused("unreadable", f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "special"


def readable_name(name: str) -> str:
    """A file name as a person can read it: undecodable bytes shown as \\xNN, nothing lost.

    Names come from the file system with Python's surrogate escapes for bytes that are not
    UTF-8 (`caf\\udce9.jpg` for b'caf\\xe9.jpg'); those cannot be encoded to UTF-8 for JSON,
    HTML or Parquet, so they are shown as `caf\\xe9.jpg`.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8_name(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (surrogate-escaped)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@contextmanager
def atomic_write(path: Path | str) -> Iterator[BinaryIO]:
    """Write PATH all or nothing: yield a temporary file beside it, then rename it over PATH.

    The data is fsynced before the rename and the folder after it, so a crash or a power cut
    leaves the old file or the new one, never half of one. On an error the temporary file is
    removed and PATH is untouched.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path | str) -> None:
    """Make a rename in `folder` durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
