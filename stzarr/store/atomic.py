"""Atomic outputs: the one way stzarr writes a file or a directory it hands to the user.

An output is written to a hidden *partial* sibling ``.NAME.partial-XXXXXXXX`` and renamed into
place when complete, so a reader sees the old output or the new one, never half of one. While
its writer lives, a partial is held under an advisory lock (``flock``); a partial nobody holds
was left by a killed run (SIGKILL, power loss) and is *stale*: :func:`stale_partials` names
them, :func:`remove_stale_partials` removes them (``stzarr clean``, or the next write to the
same destination, which says so).

Nothing that stzarr did not write is replaced: an existing destination is replaced only when
``overwrite`` is asked for *and* the caller's ``ours`` test recognises it as stzarr's own output
(a store with stzarr's format marker, an HDF5 file, a PNG, a training log...). A directory is
swapped in with one ``renameat2(RENAME_EXCHANGE)`` where the filesystem supports it, so the old
contents are never left under another name.

A partial is stzarr's only when a *marker* stzarr wrote lies beside it
(``.NAME.partial-XXXXXXXX.stzarr``, created before the partial and removed after it): ``clean``
and the next write remove marked partials only, never a user's directory that merely has a
similar name, and a destination named like a partial is refused. A destination inside a Zarr
hierarchy (a store's array, say) is refused too: replacing the host would delete it.

Writers of a directory (a store) hold the destination's ``flock`` from start to swap
(:func:`lock_store`; ``stzarr append`` takes it before reading the store) and check at the swap
that the path still names the directory they locked, so two writers never lose each other's
update. The rename is a critical section: SIGINT/SIGTERM arriving meanwhile are held and
raised after it (:func:`critical`), so a command knows whether its change was committed;
:func:`commands_commit` keeps them held for the rest of a command once it has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import os
import re
import shutil
import struct
import sys
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Self

from stzarr.errors import StoreExistsError, StzarrError, StzarrWarning

PARTIAL_MARK = ".partial-"
MARKER_SUFFIX = ".stzarr"
_PARTIAL_NAME = re.compile(r"^\..+\.partial-[0-9a-f]{8}(\.stzarr)?$")
ZARR_DOCUMENTS = ("zarr.json", ".zgroup", ".zarray")
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV)


def _renameat2_function() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2_function()


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the platform or filesystem lacks it."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(dst))


def partial_sibling(path: Path) -> Path:
    """A fresh hidden partial name next to ``path``."""
    return path.with_name(f".{path.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}")


def marker_of(partial: Path) -> Path:
    """The marker file that says stzarr wrote ``partial``."""
    return partial.with_name(partial.name + MARKER_SUFFIX)


def _marker_text(path: Path) -> str:
    return f"stzarr partial output of {path.name}\n"


def _is_marked(partial: Path, path: Path) -> bool:
    try:
        return marker_of(partial).read_text() == _marker_text(path)
    except (OSError, UnicodeDecodeError):
        return False


class _Signals:
    """SIGINT/SIGTERM state shared with the CLI's handlers (see :func:`critical`)."""

    depth = 0  # critical sections entered
    hold = False  # a command that keeps signals held once it committed
    pending: BaseException | None = None
    committed: list[Path] = []  # noqa: RUF012 (one per process, reset per command)
    live: set[AtomicOutput] = set()  # noqa: RUF012 (outputs neither committed nor aborted)


def defer_signal(interruption: BaseException) -> bool:
    """Called by the CLI's signal handlers: True when ``interruption`` must wait (a commit is
    under way, or the command has committed and holds signals); it is then recorded."""
    if _Signals.depth or (_Signals.hold and _Signals.committed):
        _Signals.pending = _Signals.pending or interruption
        return True
    return False


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section SIGINT/SIGTERM do not interrupt (where the CLI's handlers are installed): one
    arriving meanwhile is raised when it ends, unless a command holding signals committed."""
    _Signals.depth += 1
    try:
        yield
    finally:
        _Signals.depth -= 1
    pending = _Signals.pending
    if not _Signals.depth and pending is not None and not (_Signals.hold and _Signals.committed):
        _Signals.pending = None
        raise pending


@contextlib.contextmanager
def commands_commit() -> Iterator[_Signals]:
    """Run one command: once it commits an output, SIGINT/SIGTERM are held to its end (its
    change is made; the exit status must say so). Outputs left open when it ends (an
    interruption between a writer's creation and its first use) are aborted. Yields the state:
    ``committed`` (paths) and ``pending`` (the interruption held, if any)."""
    _Signals.hold, _Signals.pending, _Signals.committed = True, None, []
    try:
        yield _Signals
    finally:
        _Signals.hold, _Signals.pending = False, None  # a held signal is the command's alone
        abort_all()


def abort_all() -> None:
    """Abort every output neither committed nor aborted yet."""
    for output in list(_Signals.live):
        output.abort()


_OFD_LOCK = struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)  # struct flock


def _lock(path: Path) -> int | None:
    """A file descriptor holding an exclusive lock on ``path``; None when it is held elsewhere.

    A directory (a store) is locked with ``flock``; a file with an open-file-description
    record lock (``F_OFD_SETLK``), which HDF5's own ``flock`` on the same file does not
    disturb. Filesystems without locks count as held (never removed as stale).
    """
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
        lock = functools.partial(fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fd = os.open(path, os.O_RDWR)
        lock = functools.partial(fcntl.fcntl, fd, fcntl.F_OFD_SETLK, _OFD_LOCK)
    try:
        lock()
    except OSError:
        os.close(fd)
        return None
    return fd


def lock_store(path: Path, *, wait: bool = False) -> int | None:
    """An exclusive ``flock`` on the directory ``path`` (a store), checked to still be the
    directory at ``path`` once locked; None when another process holds it.

    Parameters
    ----------
    wait : bool
        Wait for the lock rather than give up at once.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise BlockingIOError  # replaced while we waited: the lock guards nothing
    except OSError:
        os.close(fd)
        return None
    return fd


def partials_of(path: str | os.PathLike[str]) -> list[Path]:
    """Every partial (live or stale) of the destination ``path`` that stzarr marked as its
    own, sorted by name; also markers whose partial is gone."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{path.name}{PARTIAL_MARK}") + r"[0-9a-f]{8}$")
    found = []
    for entry in parent.iterdir():
        if pattern.match(entry.name) and _is_marked(entry, path):
            found.append(entry)
        elif (
            entry.name.endswith(MARKER_SUFFIX)
            and pattern.match(entry.name.removesuffix(MARKER_SUFFIX))
            and not entry.with_name(entry.name.removesuffix(MARKER_SUFFIX)).exists()
            and _is_marked(entry.with_name(entry.name.removesuffix(MARKER_SUFFIX)), path)
        ):
            found.append(entry)  # a marker whose partial is gone
    return sorted(found)


def stale_partials(path: str | os.PathLike[str]) -> list[Path]:
    """Partials of ``path`` that no running writer holds (left by a killed run)."""
    stale = []
    for partial in partials_of(path):
        if partial.name.endswith(MARKER_SUFFIX):
            stale.append(partial)
            continue
        try:
            fd = _lock(partial)
        except OSError:  # vanished meanwhile, or unreadable: not ours to judge
            continue
        if fd is not None:
            os.close(fd)
            stale.append(partial)
    return stale


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=False)
    else:
        path.unlink(missing_ok=True)


def remove_stale_partials(path: str | os.PathLike[str], *, announce: bool = True) -> list[Path]:
    """Remove the stale partials of ``path``; with ``announce`` each one is named in a
    :class:`~stzarr.errors.StzarrWarning` (never silently)."""
    removed = []
    for partial in stale_partials(path):
        try:
            remove_path(partial)
            marker_of(partial).unlink(missing_ok=True)
        except OSError as exc:
            raise StzarrError(f"cannot remove stale partial {partial}: {exc.strerror}") from None
        removed.append(partial)
        if announce:
            warnings.warn(
                f"removed {partial}, a partial output left by an interrupted run",
                StzarrWarning,
                stacklevel=2,
            )
    return removed


# -- what counts as stzarr's own output ------------------------------------------------------


def has_signature(signature: bytes) -> Callable[[Path], bool]:
    """A test: ``path`` is a regular file starting with ``signature``."""

    def test(path: Path) -> bool:
        if not path.is_file():
            return False
        with path.open("rb") as fh:
            return fh.read(len(signature)) == signature

    return test


is_hdf5_file = has_signature(b"\x89HDF\r\n\x1a\n")
is_png_file = has_signature(b"\x89PNG\r\n\x1a\n")
is_pickle_file = has_signature(b"\x80")


def is_torch_file(path: Path) -> bool:
    """A file written by ``torch.save`` (a zip archive)."""
    return path.is_file() and zipfile.is_zipfile(path)


def is_json_with(key: str) -> Callable[[Path], bool]:
    """A test: ``path`` is a JSON object holding ``key`` (e.g. a training log's ``epochs``)."""

    def test(path: Path) -> bool:
        try:
            return path.is_file() and key in json.loads(path.read_text())
        except (OSError, ValueError, TypeError):
            return False

    return test


def check_target(
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    ours: Callable[[Path], bool],
    what: str,
) -> Path:
    """Refuse early (before any work) an output that cannot or must not be written.

    Parameters
    ----------
    path : path
        The destination.
    overwrite : bool
        Whether replacing an existing destination was asked for.
    ours : callable
        True when an existing destination is stzarr's own output of this kind.
    what : str
        The kind, for messages (``"a stzarr store"``, ``"a PNG file"``...).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    StoreExistsError
        ``path`` exists and ``overwrite`` is false.
    StzarrError
        ``path`` exists but is not ``what`` (never replaced), its directory is missing or not
        writable, it lies inside a Zarr hierarchy, or it is named like a partial output.
    """
    path = Path(path)
    if _PARTIAL_NAME.match(path.name):
        raise StzarrError(
            f"{path} is named like a partial output of stzarr (.NAME{PARTIAL_MARK}XXXXXXXX); "
            "choose another name"
        )
    host = zarr_host(path)
    if host is not None:
        raise StzarrError(
            f"cannot write {path}: it lies inside the Zarr hierarchy {host}, which a later "
            "write of that store would delete"
        )
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise StoreExistsError(f"{path} exists (pass --overwrite to replace it)")
        if path.is_symlink() or not ours(path):
            raise StzarrError(f"{path} exists and is not {what}; refusing to replace it")
    parent = path.parent
    if not parent.is_dir():
        raise StzarrError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StzarrError(f"cannot write {path}: directory {parent} is not writable")
    return path


def zarr_host(path: str | os.PathLike[str]) -> Path | None:
    """The outermost existing directory above ``path`` that is part of a Zarr hierarchy
    (holds ``zarr.json``, ``.zgroup`` or ``.zarray``); None when there is none."""
    host = None
    for parent in Path(os.path.abspath(path)).parents:
        if any((parent / doc).is_file() for doc in ZARR_DOCUMENTS):
            host = parent
    return host


def check_apart(dst: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse a destination that is a source, lies inside one, or holds one (replacing it
    would delete the source)."""
    target = Path(os.path.realpath(dst))
    for source in sources:
        text = os.fspath(source)
        if "://" in text and not text.startswith("file://"):
            continue
        src = Path(os.path.realpath(text.removeprefix("file://")))
        if target == src or target.is_relative_to(src) or src.is_relative_to(target):
            raise StzarrError(
                f"cannot write {dst}: it is, holds or lies inside the source {source}"
            )


class Transaction:
    """Context-manager protocol of a writer: :meth:`commit` when the block succeeds,
    :meth:`abort` on any exception (Ctrl-C and SIGTERM included)."""

    def commit(self) -> object:
        """Make the output visible."""
        raise NotImplementedError

    def abort(self) -> None:
        """Remove everything written so far."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class AtomicOutput(Transaction):
    """A file or directory written under a locked, marked partial name and renamed into place.

    Use as a context manager: the body writes to :attr:`partial`; on success :meth:`commit`
    renames it into place (re-checking the destination, so the loser of a race fails cleanly),
    on any exception (Ctrl-C and SIGTERM included) :meth:`abort` removes it.

    Parameters
    ----------
    path : path
        The destination.
    overwrite, ours, what
        As for :func:`check_target` (checked now and again at commit).
    directory : bool
        Create the partial as an empty directory (a store) rather than an empty file. An
        existing destination directory is locked (:func:`lock_store`) until the swap.
    lock : int, optional
        A lock on the destination the caller already holds (``append``); it stays the
        caller's to release.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool,
        ours: Callable[[Path], bool],
        what: str,
        directory: bool = False,
        lock: int | None = None,
    ) -> None:
        self.path = check_target(path, overwrite=overwrite, ours=ours, what=what)
        self.overwrite, self._ours, self._what = overwrite, ours, what
        self.directory = directory
        self.partial = partial_sibling(self.path)
        self._done = False
        self._fd: int | None = None
        self._dst_lock, self._own_lock = lock, lock is None
        try:
            with critical():
                _Signals.live.add(self)
                if directory and lock is None and self.path.is_dir():
                    self._dst_lock = _lock_destination(self.path)
                marker = marker_of(self.partial)
                with open(marker, "x") as fh:
                    fh.write(_marker_text(self.path))
                if directory:
                    self.partial.mkdir()
                else:
                    os.close(os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                self._fd = _lock(self.partial)
        except OSError as exc:
            self.abort()
            raise StzarrError(f"cannot write {self.path}: {exc.strerror}") from None
        except BaseException:
            self.abort()
            raise

    def commit(self) -> Path:
        """Rename the partial into place; on failure remove it and raise (idempotent).

        SIGINT/SIGTERM wait until the rename and the removal of the replaced contents are
        done (:func:`critical`)."""
        if self._done:
            return self.path
        with critical():
            try:
                self._commit()
            except BaseException as exc:
                self.abort()
                if isinstance(exc, OSError):
                    raise StzarrError(f"cannot write {self.path}: {exc.strerror or exc}") from None
                raise
            self._done = True
            _Signals.committed.append(self.path)
            marker_of(self.partial).unlink(missing_ok=True)
            self._release()
        return self.path

    def _commit(self) -> None:
        if not self.directory:
            with open(self.partial, "rb+") as fh:
                os.fsync(fh.fileno())
        if not (self.path.exists() or self.path.is_symlink()):
            try:
                if _renameat2(self.partial, self.path, RENAME_NOREPLACE):
                    return
                if not self.path.exists():
                    os.rename(self.partial, self.path)
                    return
            except FileExistsError:
                pass  # lost a race: judged below
        # the destination exists now: checked again, a concurrent writer may have put it there
        check_target(self.path, overwrite=self.overwrite, ours=self._ours, what=self._what)
        if not self.directory:
            os.replace(self.partial, self.path)
            return
        if self._dst_lock is None:  # it appeared meanwhile: lock it for the swap
            self._dst_lock = _lock_destination(self.path)
        elif os.fstat(self._dst_lock).st_ino != os.stat(self.path).st_ino:
            raise StzarrError(f"{self.path} was replaced by another process meanwhile; try again")
        if _renameat2(self.partial, self.path, RENAME_EXCHANGE):
            remove_path(self.partial)  # the old contents, now under the partial name
            return
        old = partial_sibling(self.path)
        with open(marker_of(old), "x") as fh:
            fh.write(_marker_text(self.path))
        os.rename(self.path, old)
        try:
            os.rename(self.partial, self.path)
        except BaseException:
            os.rename(old, self.path)
            raise
        remove_path(old)
        marker_of(old).unlink()

    def abort(self) -> None:
        """Remove the partial (idempotent; nothing happens after a commit). Writes still in
        flight on zarr's I/O thread (an interruption stops only the main thread) are waited
        for first, so none recreates it afterwards."""
        if self._done:
            return
        self._done = True
        with critical(), contextlib.suppress(OSError):
            if self.directory:
                _settle_zarr_writes()
                _remove_settled(self.partial)
            else:
                remove_path(self.partial)
            marker_of(self.partial).unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        _Signals.live.discard(self)
        for name in ("_fd", "_dst_lock"):
            fd = getattr(self, name, None)
            if fd is not None and (name == "_fd" or self._own_lock):
                os.close(fd)
            setattr(self, name, None)


def _lock_destination(path: Path) -> int:
    fd = lock_store(path)
    if fd is None:
        raise StzarrError(f"{path} is being written by another process; try again")
    return fd


def _settle_zarr_writes(timeout: float = 30.0) -> None:
    """Wait for the tasks on zarr's I/O event loop (an interrupted write goes on there)."""
    zsync = sys.modules.get("zarr.core.sync")
    loop = None if zsync is None else zsync.loop[0]
    if loop is None or not loop.is_running():
        return

    async def drain() -> None:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        await asyncio.gather(*others, return_exceptions=True)

    future = asyncio.run_coroutine_threadsafe(drain(), loop)
    with contextlib.suppress(Exception):
        future.result(timeout)


def _remove_settled(path: Path, rounds: int = 20, pause: float = 0.05) -> None:
    """Remove ``path``, again while a late writer (a thread of an interrupted computation)
    recreates it."""
    for _ in range(rounds):
        with contextlib.suppress(FileNotFoundError, OSError):
            remove_path(path)
        time.sleep(pause)
        if not (path.exists() or path.is_symlink()):
            return
        _settle_zarr_writes()
    remove_path(path)


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    ours: Callable[[Path], bool],
    what: str,
) -> Iterator[Path]:
    """Yield a partial path to write a file to; it replaces ``path`` when the block succeeds."""
    with AtomicOutput(path, overwrite=overwrite, ours=ours, what=what) as out:
        yield out.partial


def write_text(
    path: str | os.PathLike[str], text: str, *, ours: Callable[[Path], bool], what: str
) -> Path:
    """Write ``text`` to ``path`` atomically (replacing only what ``ours`` recognises)."""
    with atomic_file(path, ours=ours, what=what) as partial:
        partial.write_text(text)
    return Path(path)
