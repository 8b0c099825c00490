"""A ``.npy`` file's rows mapped into memory, safe against the file being changed under the map.

Streamed through positioned reads, every byte of an epoch is copied twice: by the kernel from
the page cache into a shuffle buffer, then by the loop into a batch. On two cores the first copy
is what keeps a streamed epoch above the in-memory one (``benchmarks/bench_streaming.py``): it
evicts the step's working set from the caches. A memory map skips it; the batch is gathered
straight from the page cache, as from an array. But a process that truncates a mapped file kills
the reader with SIGBUS at its next touch, with no error to catch and nothing said.

A read lease (``fcntl(F_SETLEASE, F_RDLCK)``) closes that gap. While it is held, a process that
opens the file for writing or truncates it is held by the kernel (up to
``/proc/sys/fs/lease-break-time``, 45 s by default), and this process is sent a signal first.
The handler, which Python runs in the main thread, stops every use of the map and releases the
lease; an access in progress (the reader thread checking a block, the loop gathering a batch)
finishes first and releases it on its way out. The run goes on by positioned reads, which see
the change and refuse the file by name (``NpySource``), as they did before there was a map.

Where no lease can be had there is no map: positioned reads, as before. That is the case off
Linux (leases and real-time signals are Linux's), for a
file of another user, on NFS and other file systems without leases, for a file open for writing,
when leases are disabled, outside the main thread (a signal handler can only be set there), and
when the signal this module uses already has another handler.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

try:
    import fcntl
except ImportError:  # not a POSIX system: no leases
    fcntl = None

# sent on a lease break (F_SETSIG); its default action ends the process. Linux only, as leases.
LEASE_SIGNAL = signal.SIGRTMIN + 4 if hasattr(signal, "SIGRTMIN") else None
LEASES = LEASE_SIGNAL is not None and hasattr(fcntl, "F_SETLEASE")
# a fault maps the whole page-cache folio around it (up to a 2 MiB huge page), so rows of other
# blocks are mapped without being used: an unmap reaches out to this alignment at both ends
AROUND = 2 << 20
_LIVE: weakref.WeakSet = weakref.WeakSet()  # maps whose leases a signal may be breaking


def _on_lease_break(signum, frame) -> None:
    for leased in list(_LIVE):
        leased.let_go()


def _handler_ready() -> bool:
    """Sets the lease signal's handler, once, from the main thread; False where it cannot."""
    if not LEASES or threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(LEASE_SIGNAL)
    if current is _on_lease_break:
        return True
    if current not in (signal.SIG_DFL, None):
        return False  # someone else's: never replaced
    signal.signal(LEASE_SIGNAL, _on_lease_break)
    return True


class LeasedMap:
    """The rows of one ``.npy`` file, mapped under a read lease (``open_leased`` makes one).

    Every use of ``rows`` goes through ``access()``, which yields the rows, or None once the
    lease was broken or is being broken (then read the file instead). ``drop(lo, hi)`` lets the
    kernel unmap rows lo..hi-1 (they stay in the page cache; a later access maps them again), so
    the process's resident memory stays what is in use, not the file.
    """

    def __init__(self, fd: int, mapped: mmap.mmap, rows: np.ndarray, offset: int) -> None:
        self._fd, self._mmap, self._rows, self._offset = fd, mapped, rows, offset
        self._row_bytes = rows.strides[0] if rows.ndim else rows.itemsize
        self._pid = os.getpid()  # a forked child has the map but neither the lease nor its signal
        self._lock = threading.Lock()
        self._pending = False  # a lease break arrived: stop using the map, release the lease
        self.broken = False  # the lease is released: the map must not be touched again
        _LIVE.add(self)

    @contextmanager
    def access(self) -> Iterator[np.ndarray | None]:
        """The mapped rows for the duration of the block, or None (read the file instead)."""
        try:
            yield self.acquire()
        finally:
            self.release()

    def acquire(self) -> np.ndarray | None:
        """``access`` without a context manager (a batch's gather): the rows, or None; either
        way ``release()`` must follow."""
        self._lock.acquire()
        usable = not (self.broken or self._pending) and os.getpid() == self._pid
        return self._rows if usable else None

    def release(self) -> None:
        """Ends an access; a lease break that arrived during it is carried out now."""
        self._lock.release()
        if self._pending:
            self.let_go()

    def let_go(self) -> None:
        """Stops using the map and releases the lease, now if no access is in progress, else
        when it ends (never waits: the signal handler calls this in the main thread, which may
        be the one inside the access)."""
        self._pending = True
        if not self._lock.acquire(blocking=False):
            return  # the access in progress sees _pending when it ends
        try:
            if not self.broken:
                self.broken = True
                self._release()
        finally:
            self._lock.release()

    def _release(self) -> None:
        with contextlib.suppress(OSError):  # the kernel broke it already (its time ran out)
            fcntl.fcntl(self._fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)

    def drop(self, lo: int, hi: int) -> None:
        """Unmaps rows lo..hi-1 from this process, and what faulting them in mapped around them;
        a no-op once the lease is broken."""
        with self._lock:
            if self.broken or self._pending or os.getpid() != self._pid:
                return
            start = (self._offset + lo * self._row_bytes) // AROUND * AROUND
            end = min(-(-(self._offset + hi * self._row_bytes) // AROUND) * AROUND, len(self._mmap))
            if end > start:
                self._mmap.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        """Releases the lease and the map; the rows must not be used after."""
        if os.getpid() != self._pid:
            return  # the parent's to release
        with self._lock:
            if not self.broken:
                self.broken = True
                self._release()
            self._rows = None
            with contextlib.suppress(BufferError):  # a view still lives: unmapped when it goes
                self._mmap.close()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        _LIVE.discard(self)

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()


def open_leased(path, offset: int, shape: tuple[int, ...], dtype, stamp) -> LeasedMap | None:
    """``path``'s rows (``shape`` of ``dtype`` from byte ``offset``) mapped under a read lease,
    or None where no lease can be had (see the module's docstring). ``stamp`` is what
    ``stamp_of(os.fstat(fd))`` gave when the caller opened the file: a file changed since is not
    mapped (the caller's reads say what changed)."""
    if not _handler_ready():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, LEASE_SIGNAL)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:  # EACCES, EAGAIN, EINVAL: not ours, open for writing, no leases here
        os.close(fd)
        return None
    count = math.prod(shape)
    st = os.fstat(fd)
    if stamp_of(st) != stamp or st.st_size < offset + count * np.dtype(dtype).itemsize:
        _unlease_and_close(fd)
        return None
    # read-only and shared: the page cache's huge pages can be mapped whole (one TLB entry and
    # one fault for 2 MiB; a private, writable map takes them 4 KiB at a time)
    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_HUGEPAGE)
    rows = np.frombuffer(mapped, dtype, count=count, offset=offset).reshape(shape)
    return LeasedMap(fd, mapped, rows, offset)


def _unlease_and_close(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    finally:
        os.close(fd)


def stamp_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is written to or replaced: size, modification time, identity."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev
