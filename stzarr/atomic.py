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
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import os
import shutil
import struct
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

from stzarr.errors import StoreExistsError, StzarrError, StzarrWarning

PARTIAL_MARK = ".partial-"
LEGACY_MARK = ".old-"  # left by stzarr before 0.2 when a replaced store could not be removed
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


def partials_of(path: str | os.PathLike[str]) -> list[Path]:
    """Every partial (live or stale) of the destination ``path``, sorted by name."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    prefixes = (f".{path.name}{PARTIAL_MARK}", f".{path.name}{LEGACY_MARK}")
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefixes))


def stale_partials(path: str | os.PathLike[str]) -> list[Path]:
    """Partials of ``path`` that no running writer holds (left by a killed run)."""
    stale = []
    for partial in partials_of(path):
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
        ``path`` exists but is not ``what`` (never replaced), or its directory is missing or
        not writable.
    """
    path = Path(path)
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
    """A file or directory written under a locked partial name and renamed into place.

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
        Create the partial as an empty directory (a store) rather than an empty file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool,
        ours: Callable[[Path], bool],
        what: str,
        directory: bool = False,
    ) -> None:
        self.path = check_target(path, overwrite=overwrite, ours=ours, what=what)
        self.overwrite, self._ours, self._what = overwrite, ours, what
        self.directory = directory
        self.partial = partial_sibling(self.path)
        self._done = False
        try:
            if directory:
                self.partial.mkdir()
            else:
                os.close(os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            self._fd = _lock(self.partial)
        except OSError as exc:
            self.abort()
            raise StzarrError(f"cannot write {self.path}: {exc.strerror}") from None

    def commit(self) -> Path:
        """Rename the partial into place; on failure remove it and raise (idempotent)."""
        if self._done:
            return self.path
        try:
            self._commit()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise StzarrError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            raise
        self._done = True
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
        if _renameat2(self.partial, self.path, RENAME_EXCHANGE):
            remove_path(self.partial)  # the old contents, now under the partial name
            return
        old = partial_sibling(self.path)
        os.rename(self.path, old)
        try:
            os.rename(self.partial, self.path)
        except BaseException:
            os.rename(old, self.path)
            raise
        remove_path(old)

    def abort(self) -> None:
        """Remove the partial (idempotent; nothing happens after a commit)."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            remove_path(self.partial)
        self._release()

    def _release(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None


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
