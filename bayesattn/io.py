"""Safe output files: atomic writes and the output folder's manifest.

Every file the command line writes goes through :func:`atomic_path`: the content is written to
a temporary file in the destination folder, flushed to disk (``fsync``), then renamed over the
destination (``os.replace``, atomic on POSIX and Windows), so a reader, a crash or Ctrl-C sees
either the old file or the complete new one, never a partial file. The rename replaces a
symbolic link at the destination by the new file instead of writing through it.

:class:`OutputDir` is one run's output folder. It keeps the manifest
``.bayesattn-manifest.json`` (:data:`MANIFEST_NAME`)::

    {"tool": "bayesattn", "version": 1, "command": [...], "complete": false,
     "files": ["kernel.nc", "summary.md", ...]}

which lists every file this tool wrote there and whether the run finished. A name is listed
*before* its file is renamed into place, so a run stopped at any moment leaves no file of ours
that the manifest does not name. On the next run in the same folder:

* without ``force``: a folder that is empty or holds only our *unfinished* run is reused (our
  files are removed and the run starts over); a finished run or any file we did not write is
  refused with a :class:`~bayesattn.errors.UsageError`;
* with ``force``: the files of the previous run (the manifest's list) are removed, whatever
  model wrote them; files we did not write are left alone, and a run that would write over one
  of them is refused before it starts.

Removal never follows symbolic links (``os.unlink`` removes the link) and never removes a folder
or anything outside the output folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UsageError

__all__ = ["MANIFEST_NAME", "TEMP_PREFIX", "OutputDir", "atomic_path", "check_writable",
           "write_text_atomic"]

#: name of the manifest file in an output folder
MANIFEST_NAME = ".bayesattn-manifest.json"
#: prefix of this tool's temporary files (removed on failure; stale ones on the next run)
TEMP_PREFIX = ".bayesattn-tmp-"
_MANIFEST_VERSION = 1


def _fsync_path(path: Path) -> None:
    """``fsync`` a regular file (never through a symbolic link)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """``fsync`` a folder so a rename in it survives a crash (a no-op where unsupported)."""
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover - e.g. some network file systems
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally, make it ``path``.

    The temporary file is created empty (``O_CREAT | O_EXCL``, so never through an existing
    link) in ``path``'s folder with ``path``'s suffix (so writers that infer the format from
    the name, e.g. ``Figure.savefig``, still do). After the block it is ``fsync``-ed and renamed
    onto ``path`` with ``os.replace``; on any exception, ``KeyboardInterrupt`` included, it is
    removed and ``path`` is left as it was.

    Example::

        with atomic_path(out / "fit.nc") as tmp:
            idata.to_netcdf(tmp)

    Raises:
        OSError: the folder is not writable, or the rename fails (``path`` is a folder).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    tmp = Path(name)
    try:
        try:  # mkstemp makes the file private (0600); give it the usual mode of a new file
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o666 & ~_umask())
        finally:
            os.close(fd)
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`).

    Raises:
        OSError: as :func:`atomic_path`.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_writable(folder: Path, flag: str = "--out") -> None:
    """Create and remove a temporary file in ``folder``.

    Raises:
        UsageError: the folder does not accept new files (permissions, read-only file system).
    """
    try:
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise UsageError(f"{flag} {folder}: cannot write there ({_reason(err)})") from None


def _reason(err: OSError) -> str:
    return err.strerror or errno.errorcode.get(err.errno or 0, str(err))


def _check_name(name: str) -> str:
    """A plain file name inside the folder (no separators, no '..', not ours reserved)."""
    if (not name or name in (".", "..") or "/" in name or os.sep in name
            or (os.altsep and os.altsep in name)):
        raise ValueError(f"output file name must be a plain name inside the folder, got {name!r}")
    if name == MANIFEST_NAME or name.startswith(TEMP_PREFIX):
        raise ValueError(f"output file name {name!r} is reserved")
    return name


def _first_existing_ancestor(path: Path) -> Path:
    for parent in (path, *path.parents):
        if os.path.lexists(parent):
            return parent
    return Path(".")  # pragma: no cover - '/' always exists


class OutputDir:
    """One run's output folder: atomic writes recorded in a manifest (see the module docs).

    Create it with :meth:`prepare` (the command line: checks, manifest, cleanup) or
    :meth:`plain` (a caller-managed folder: atomic writes, no manifest, nothing removed).

    Attributes:
        path: the folder.
        written: names written by this run, in order.
    """

    def __init__(self, path: Path, *, manifest: dict | None, created=()) -> None:
        self.path = Path(path)
        self._manifest = manifest
        self._created = list(created)  # folders abandon() may remove, deepest first
        self.written: list[str] = []

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ construction
    @classmethod
    def plain(cls, path: str | Path) -> OutputDir:
        """An existing folder written atomically, with no manifest (library callers).

        Raises:
            UsageError: ``path`` is not a folder.
        """
        path = Path(path)
        if not path.is_dir():
            raise UsageError(f"{path}: not a folder")
        return cls(path, manifest=None)

    @classmethod
    def prepare(cls, path: str | Path, *, force: bool = False, planned: Iterable[str] = (),
                command: list[str] | None = None, flag: str = "--out") -> OutputDir:
        """Check, create and claim an output folder, before any slow work.

        Args:
            path: the folder (created with its parents when missing).
            force: replace the previous run's files (the manifest's list).
            planned: names this run will write; refused up front when one of them is a file
                (or link, or folder) this tool did not write.
            command: recorded in the manifest (e.g. ``sys.argv``).
            flag: the option named in error messages.

        Raises:
            UsageError: ``path`` or one of its parents is not a folder; the folder cannot be
                created or written (checked by creating a temporary file); it holds files we
                did not write (without ``force``), a finished run (without ``force``), or,
                with ``force``, a file of ours-to-be in ``planned`` that we did not write;
                the manifest is unreadable.
        """
        path = Path(path)
        anchor = _first_existing_ancestor(path)
        if anchor.is_symlink() and not anchor.exists():
            raise UsageError(f"{flag} {path}: {anchor} is a broken symbolic link")
        if not anchor.is_dir():
            where = "" if anchor == path else f" ({anchor} is a file)"
            raise UsageError(f"{flag} {path}: not a folder{where}")
        created = [p for p in (path, *path.parents) if not os.path.lexists(p)]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            _remove_empty(created)
            raise UsageError(f"{flag} {path}: cannot create the folder ({_reason(err)})") from None
        try:
            check_writable(path, flag)
            out = cls._claim(path, force=force, planned=list(planned), command=command,
                             flag=flag, created=created)
        except BaseException:
            _remove_empty(created)
            raise
        return out

    @classmethod
    def _claim(cls, path, *, force, planned, command, flag, created) -> OutputDir:
        manifest_path = path / MANIFEST_NAME
        previous = _read_manifest(manifest_path, flag)
        ours = set(previous["files"]) if previous else set()
        entries = [p.name for p in path.iterdir()]
        foreign = sorted(n for n in entries
                         if n not in ours and n != MANIFEST_NAME and not n.startswith(TEMP_PREFIX))
        if not force:
            if previous and previous.get("complete"):
                raise UsageError(f"{flag} {path} holds a finished bayesattn run; "
                                 "pass --force to replace it (only its own files are removed)")
            if foreign:
                raise UsageError(f"{flag} {path} already exists and is not empty "
                                 f"({_names(foreign)}); pass --force to write there anyway "
                                 "(files bayesattn did not write are kept)")
        clash = sorted(set(planned) & set(foreign))
        if clash:
            raise UsageError(f"{flag} {path}: {_names(clash)} not written by bayesattn; "
                             "move it away (--force replaces only bayesattn's own files)")
        # the previous run's files (listed in its manifest) and our stale temporary files
        for name in sorted(ours) + [n for n in entries if n.startswith(TEMP_PREFIX)]:
            _unlink_plain(path, name)
        manifest = {"tool": "bayesattn", "version": _MANIFEST_VERSION,
                    "command": list(command or []), "complete": False, "files": []}
        # folders this run created, or one that held only our earlier run, may be removed
        # again by abandon() when this run writes nothing
        if not created and previous is not None and not foreign:
            created = [path]
        out = cls(path, manifest=manifest, created=created)
        out._save_manifest()
        return out

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def file(self, name: str) -> Iterator[Path]:
        """Yield a temporary path that becomes ``self.path / name`` when the block succeeds.

        The name is recorded in the manifest first. Example::

            with out.file("kernel.nc") as tmp:
                idata.to_netcdf(tmp)

        Raises:
            ValueError: ``name`` is not a plain file name or is reserved.
            UsageError: the destination is a folder, or (manifest folders) a file this tool
                did not write.
        """
        _check_name(name)
        dest = self.path / name
        if dest.is_dir() and not dest.is_symlink():
            raise UsageError(f"cannot write {dest}: it is a folder")
        if self._manifest is not None:
            if os.path.lexists(dest) and name not in self._manifest["files"]:
                raise UsageError(f"{dest} exists and was not written by bayesattn; move it away")
            if name not in self._manifest["files"]:
                self._manifest["files"].append(name)
                self._save_manifest()
        with atomic_path(dest) as tmp:
            yield tmp
        if name not in self.written:
            self.written.append(name)

    def write_text(self, name: str, text: str) -> Path:
        """Write UTF-8 ``text`` to ``name`` atomically; returns the path."""
        with self.file(name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return self.path / name

    def savefig(self, name: str, fig, **kwargs) -> Path:
        """``fig.savefig`` to ``name`` atomically (format from the name's suffix)."""
        kwargs.setdefault("format", Path(name).suffix.lstrip(".") or None)
        with self.file(name) as tmp:
            fig.savefig(tmp, **kwargs)
        return self.path / name

    def to_netcdf(self, name: str, idata) -> Path:
        """``idata.to_netcdf`` to ``name`` atomically (an ArviZ InferenceData)."""
        with self.file(name) as tmp:
            idata.to_netcdf(str(tmp))
        return self.path / name

    def to_csv(self, name: str, frame, **kwargs) -> Path:
        """``frame.to_csv`` (pandas) to ``name`` atomically."""
        with self.file(name) as tmp:
            frame.to_csv(tmp, **kwargs)
        return self.path / name

    # ------------------------------------------------------------------ end of the run
    def finish(self) -> None:
        """Mark the run complete in the manifest (a later run needs ``--force``)."""
        if self._manifest is not None:
            self._manifest["complete"] = True
            self._save_manifest()

    def abandon(self) -> None:
        """After a failed run that wrote nothing: remove the manifest, and the folders this
        run created (or one that held only our earlier run), so no empty folder is left."""
        if self._manifest is None or self._manifest["files"]:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / MANIFEST_NAME)
        _remove_empty(self._created)

    def _save_manifest(self) -> None:
        write_text_atomic(self.path / MANIFEST_NAME, json.dumps(self._manifest, indent=1) + "\n")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _read_manifest(path: Path, flag: str) -> dict | None:
    if not os.path.lexists(path):
        return None
    if path.is_symlink() or not path.is_file():
        raise UsageError(f"{flag}: {path} is not a bayesattn manifest (a link or folder); "
                         "remove it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{flag}: {path} is unreadable ({err}); remove it") from None
    files = data.get("files") if isinstance(data, dict) else None
    if (data.get("tool") != "bayesattn" if isinstance(data, dict) else True) or not (
            isinstance(files, list) and all(isinstance(f, str) for f in files)):
        raise UsageError(f"{flag}: {path} is not a bayesattn manifest; remove it")
    # a tampered manifest must not name anything outside the folder
    data["files"] = [f for f in files if f and "/" not in f and os.sep not in f
                     and f not in (".", "..", MANIFEST_NAME)]
    return data


def _remove_empty(folders) -> None:
    """``rmdir`` each folder in turn (deepest first), stopping at the first that is not empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


def _unlink_plain(folder: Path, name: str) -> None:
    """Remove ``folder / name`` if it is a file or a link (the link itself), never a folder."""
    target = folder / name
    if target.is_symlink() or target.is_file():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
