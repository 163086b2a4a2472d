"""Outputs appear whole or not at all: every file of a run is written beside its target and
the whole set is renamed into place in one commit step, after everything else succeeded.

The commit is journalled, so that even a SIGKILL between two renames leaves no mix of new and
old files for long: before the first rename, a journal listing every rename is written into
each folder the commit touches; it goes once the last rename is done. A later run that writes
into any of those folders finds the journal of the killed process and finishes its commit
(every copy of the journal there: the renames may have begun, so the rest are done) or drops
it (a copy missing: none had begun, and the temporaries are orphans)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

from .errors import CurateError, setting
from .interrupts import signals_held

JOURNAL = ".curate-commit."       # a commit's journal: .curate-commit.PID.json, in each folder it touches

# Outputs renamed into place by this process (so an interruption can say what was written).
COMMITTED: list[Path] = []
# Temporary files of this process not yet renamed into place or removed. A signal can land
# where no ``with`` block will unwind (entering ``__exit__``, say), so the exit after an
# interruption removes whatever is still here: see :func:`remove_temporaries`.
TEMPORARIES: set[Path] = set()


def check_output(path: Path, *, inputs=(), overwrite: bool = False) -> Path:
    """Refuse an output that is an input, a folder, not a regular file, or (without
    overwrite) an existing file; or that lies in a folder we cannot write to."""
    path = Path(path)
    for source in inputs:
        source = Path(source)
        if path.exists() and source.exists() and os.path.samefile(path, source) \
                or path.resolve() == source.resolve():
            raise CurateError(f"{path}: the output is also an input; write to another file")
    if path.is_dir():
        raise CurateError(f"{path}: the output is a folder; name a file")
    if path.exists() and not path.is_file():
        raise CurateError(f"{path}: the output exists and is not a regular file (a device, a pipe?); "
                          "name a regular file")
    if path.exists() and not overwrite:
        raise CurateError(f"{path}: the output exists; pass {setting('overwrite')} to replace it")
    parent = _nearest_existing_parent(path)
    if not parent.is_dir():
        raise CurateError(f"{path}: cannot write there: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CurateError(f"{path}: cannot write in folder {parent}")
    return path


def _nearest_existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


class Outputs:
    """The files one run writes (dataset, rejects, removed list, report), committed together.

    ``claim`` checks each target up front (not an input, not claimed twice, writable), before
    any slow work; ``open`` gives a temporary file beside the target; ``commit`` flushes every
    temporary file to disk and only then renames them all into place. Leaving the ``with``
    block with an exception (or a signal) removes the temporary files and leaves every target
    as it was.
    """

    def __init__(self, inputs=(), *, overwrite: bool = False):
        self.inputs = [Path(p) for p in inputs]
        self.overwrite = overwrite
        self.claimed: dict[Path, tuple[Path, str]] = {}
        self.open_files: dict[Path, tuple[Path, object]] = {}
        self.merges: dict[Path, Callable[[str | None], str]] = {}
        self.stale: list[Path] = []
        self.journal: list[Path] = []       # the commit's journal copies, while it renames
        self.swept: set[Path] = set()       # folders already cleared of killed runs' leftovers (put)
        self.made: list[Path] = []          # folders this run created: removed again if it aborts
        self.unsynced = False               # files written by put, not yet flushed to disk
        self.staged: dict[Path, Path] = {}  # folder -> the staging folder of its files (put)
        self.stage_folders: set[str] = set()    # subfolders made in staging folders
        self.files: BackgroundFiles | None = None   # what writes put's files

    def _make_folder(self, folder: Path) -> None:
        """``mkdir -p folder``, remembering what was created, so that a run that fails leaves no
        empty folder behind (an output is whole or absent)."""
        missing = []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for created in reversed(missing):
            created.mkdir(exist_ok=True)
            self.made.append(created)

    def claim(self, path, role: str = "output", *, overwrite: bool | None = None) -> Path:
        """Check that ``path`` may be written by this run; ``role`` names it in errors."""
        path = Path(path)
        key = path.absolute().resolve()
        if key in self.claimed:
            other, other_role = self.claimed[key]
            raise CurateError(f"{path}: named as both the {other_role} and the {role}; give them different paths")
        recover_commits(path.absolute().parent)    # a killed run's half-done commit, finished first
        check_output(path, inputs=self.inputs, overwrite=self.overwrite if overwrite is None else overwrite)
        self.claimed[key] = (path, role)
        return path

    def open(self, path, mode: str = "w"):
        """A temporary file that becomes ``path`` at commit (the same file if opened twice)."""
        path = Path(path)
        if path in self.open_files:
            return self.open_files[path][1]
        with signals_held():       # a signal between creating the file and recording it would orphan it
            try:
                self._make_folder(path.parent)
                remove_orphans(path)
                fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                                 dir=path.parent)
            except OSError as e:
                raise CurateError(f"{path}: cannot write the output ({e.strerror})") from None
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
            kwargs = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
            stream = open(fd, mode, buffering=1 << 20, **kwargs)
            self.open_files[path] = (Path(temp_name), stream)
            TEMPORARIES.add(Path(temp_name))
        return stream

    def put(self, folder, name: str, data: bytes) -> None:
        """Write ``data`` to ``folder/name`` at commit. A run that writes a file per image
        (``--extract-images``) writes them all into one staging folder beside ``folder``
        (``.FOLDER.PID.stage.tmp``): a plain create and write per file, no temporary name, no
        descriptor kept, written by a background thread (:class:`BackgroundFiles`), one sync at
        commit for them all. At commit the staging folder is
        renamed into place once when ``folder`` does not exist, else its files one by one."""
        folder = Path(folder)
        stage = self.staged.get(folder)
        if stage is None:
            stage = self._stage(folder)
        target = os.path.join(stage, name)
        try:
            sub = os.path.dirname(name)
            if sub and sub not in self.stage_folders:
                os.makedirs(os.path.join(stage, sub), exist_ok=True)
                self.stage_folders.add(sub)
        except OSError as e:
            raise CurateError(f"{folder / name}: cannot write the output ({e.strerror})") from None
        if self.files is None:
            self.files = BackgroundFiles()
        self.files.write(target, data, folder / name)
        self.unsynced = True        # flushed to disk once for all at commit (one sync, not one per image)

    def _stage(self, folder: Path) -> Path:
        """The staging folder of ``folder``'s files, after a killed run's leftovers there went."""
        with signals_held():
            try:
                self._make_folder(folder.parent)
                remove_orphans(folder)
                stage = folder.parent / f".{folder.name}.{os.getpid()}.stage.tmp"
                stage.mkdir()
            except OSError as e:
                raise CurateError(f"{folder}: cannot write the output ({e.strerror})") from None
            TEMPORARIES.add(stage)
            self.staged[folder] = stage
        return stage

    def _staged_renames(self) -> list[tuple[Path, Path]]:
        """The renames that put the staged files in place: the staging folder itself when its
        target does not exist, else each file (into subfolders made now)."""
        renames = []
        for folder, stage in self.staged.items():
            if not os.path.lexists(folder):
                renames.append((stage, folder))
                continue
            for root, _, files in os.walk(stage):
                place = folder / os.path.relpath(root, stage)
                if files:
                    self._make_folder(place)
                    recover_commits(place)
                renames += [(Path(root) / name, place / name) for name in files]
        return renames

    def merge(self, path, render: Callable[[str | None], str]) -> None:
        """Write ``path`` at commit as ``render(its text then)`` (None when it does not exist).
        The read, the render and the rename happen under a lock on ``path``, so runs that merge
        into one file at once each add their part; none is lost."""
        self.merges[Path(path)] = render

    def discard_at_commit(self, path) -> None:
        """Remove ``path`` at commit (a stale rejects list from an earlier run would mislead)."""
        self.stale.append(Path(path))

    def commit(self) -> None:
        """Flush everything, then rename it all with signals held, so that an interruption
        comes before the first rename or after the last one; a SIGKILL between them leaves the
        commit's journal, for the next run to finish (see the module's note). Merged files are
        rendered last, under their locks, which are held until every file is in place."""
        self._sync(self.open_files)
        if self.files is not None:
            files, self.files = self.files, None
            files.finish()
        if self.unsynced:
            os.sync()
            self.unsynced = False
        with ExitStack() as locks:
            for path in sorted(self.merges):
                locks.enter_context(locked(path))
                self.open(path).write(self.merges[path](_read_existing(path)))
            self._sync(self.open_files)
            with signals_held():
                renames = [(temp, path) for path, (temp, _) in self.open_files.items()] + self._staged_renames()
                stale = [path for path in self.stale if path.is_file()]
                self.journal = write_journal(renames, stale)
                for temp, path in renames:
                    os.replace(temp, path)
                    TEMPORARIES.discard(temp)
                    COMMITTED.append(path)
                self.open_files.clear()
                self._drop_stages()
                for path in stale:
                    path.unlink(missing_ok=True)
                self._drop_journal()

    @staticmethod
    def _sync(open_files: dict) -> None:
        for temp, stream in open_files.values():
            if not stream.closed:
                stream.flush()
                os.fsync(stream.fileno())
                stream.close()

    def abort(self) -> None:
        with signals_held():        # a second Ctrl-C must not leave some temporary files behind
            if self.files is not None:
                files, self.files = self.files, None
                files.cancel()          # before its folder goes
            for temp, stream in self.open_files.values():
                try:
                    stream.close()
                except OSError:
                    pass
                temp.unlink(missing_ok=True)
                TEMPORARIES.discard(temp)
            self.open_files.clear()
            self._drop_stages()
            self._drop_journal()
            for folder in reversed(self.made):
                try:
                    folder.rmdir()           # only when empty: never what another process put there
                except OSError:
                    pass
            self.made.clear()

    def _drop_stages(self) -> None:
        """Remove the staging folders (after a commit, what is left of them: empty folders)."""
        for stage in self.staged.values():
            _remove(stage)
        self.staged.clear()
        self.stage_folders.clear()

    def _drop_journal(self) -> None:
        for copy in self.journal:
            copy.unlink(missing_ok=True)
        self.journal = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock for ``path``: ``flock`` on ``.NAME.lock`` beside it (``path``
    itself is replaced by a rename, so it cannot hold the lock). The lock file stays: removing
    it would let a waiting run and a new one lock two different files."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise CurateError(f"{lock}: cannot create the lock file that guards {path.name} ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_existing(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise CurateError(f"{path}: cannot read it to merge into ({e})") from None


def write_journal(renames: list[tuple[Path, Path]], stale: list[Path]) -> list[Path]:
    """Write a commit's journal (its renames, temporary -> target, and the files it removes)
    into every folder the commit touches, each copy whole or absent; returns the copies.
    Should one fail (a full disk), none is left and nothing was renamed."""
    folders = sorted({path.absolute().parent for _, path in renames} | {path.absolute().parent for path in stale})
    copies = [folder / f"{JOURNAL}{os.getpid()}.json" for folder in folders]
    text = json.dumps({"renames": [[str(temp.absolute()), str(path.absolute())] for temp, path in renames],
                       "remove": [str(path.absolute()) for path in stale], "copies": [str(c) for c in copies]})
    try:
        for copy in copies:
            _write_whole(copy, text)
    except OSError as e:
        for copy in copies:
            copy.unlink(missing_ok=True)
        raise CurateError(f"{copy}: cannot write the outputs' commit journal ({e.strerror})") from None
    return copies


def _write_whole(path: Path, text: str) -> None:
    """``text`` into ``path``: the file there is whole (on disk) or absent."""
    part = path.with_name(path.name + ".part")
    TEMPORARIES.add(part)
    with open(part, "w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)
    TEMPORARIES.discard(part)


def recover_commits(folder: Path) -> None:
    """Finish or drop the commits of killed curate processes that left a journal in ``folder``
    (see the module's note); their journal copies go, in every folder."""
    for journal in _dead_journals(folder):
        try:
            entry = json.loads(journal.read_text(encoding="ascii"))
            copies = [Path(copy) for copy in entry["copies"]]
        except (OSError, ValueError, KeyError, TypeError):
            journal.unlink(missing_ok=True)     # not a journal of ours: copies are written whole
            continue
        if all(copy.exists() for copy in copies):
            _roll_forward(entry)
        for copy in copies:
            copy.unlink(missing_ok=True)


def _dead_journals(folder: Path) -> list[Path]:
    """The journals in ``folder`` of processes that are gone (a journal copy that was being
    written when its process died is removed: that commit had not begun)."""
    try:
        names = [p for p in folder.iterdir() if p.name.startswith(JOURNAL)]
    except OSError:
        return []
    journals = []
    for path in names:
        pid, _, suffix = path.name[len(JOURNAL):].partition(".")
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if suffix == "json":
            journals.append(path)
        elif suffix == "json.part":
            path.unlink(missing_ok=True)
    return journals


def _roll_forward(entry: dict) -> None:
    """The renames and removals of a journalled commit that a SIGKILL interrupted."""
    for temp, target in entry["renames"]:
        try:
            os.replace(temp, target)
        except FileNotFoundError:
            pass                                # renamed before the kill
        except OSError as e:
            raise CurateError(f"{target}: cannot finish the commit of a killed earlier run ({e.strerror}); "
                              f"its new file is {temp}") from None
    for path in entry["remove"]:
        Path(path).unlink(missing_ok=True)


def remove_temporaries() -> None:
    """Remove every temporary file this process still holds (the last step of an interrupted run)."""
    with signals_held():
        for temp in list(TEMPORARIES):
            _remove(temp)
        TEMPORARIES.clear()


def _remove(path: Path) -> None:
    """Remove a temporary file or staging folder (never following a link out of it)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
    TEMPORARIES.discard(path)


def remove_orphans(path: Path) -> None:
    """Remove temporary files of ``path`` left by curate processes that were killed (SIGKILL,
    power loss): their names carry the writer's process id, and that process is gone. A killed
    commit's journal in that folder is seen to first: its temporaries may still be needed."""
    recover_commits(path.parent)
    prefix = f".{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return
    for candidate in candidates:
        pid = candidate.name[len(prefix):-len(".tmp")].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(candidate)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_output(path: Path, *, mode: str = "w"):
    """One file written through :class:`Outputs`: renamed over the target only on success."""
    with Outputs() as outputs:
        yield outputs.open(path, mode)


class BackgroundFiles:
    """Creates and writes files on one background thread while the run goes on: creating a
    file costs the kernel up to a millisecond (ext4's inode allocation), time in which the run's
    own work (reading shards, hashing images) can go on, on the other core. At most ``budget``
    bytes wait to be written (memory stays flat); the first error is raised by a later
    :meth:`write` or by :meth:`finish`."""

    def __init__(self, budget: int = 64 << 20):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="curate-files")
        self.pending: deque = deque()       # (future, bytes) in order of submission
        self.waiting = 0
        self.budget = budget

    def write(self, path: str, data: bytes, shown: Path) -> None:
        while self.pending and (self.waiting + len(data) > self.budget or self.pending[0][0].done()):
            self._settle()
        self.pending.append((self.pool.submit(_create, path, data, shown), len(data)))
        self.waiting += len(data)

    def _settle(self) -> None:
        future, size = self.pending.popleft()
        self.waiting -= size
        future.result()

    def finish(self) -> None:
        """Every file written (or the first error raised); the thread ends."""
        try:
            while self.pending:
                self._settle()
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Files not yet started are dropped; the one being written is waited for."""
        for future, _ in self.pending:
            future.cancel()
        self.pending.clear()
        self.waiting = 0
        self.pool.shutdown(wait=True)


def _create(path: str, data: bytes, shown: Path) -> None:
    """``data`` as a new file ``path``, with plain ``write`` calls (a file object would add an
    ``isatty`` ioctl, a seek and a stat per file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as e:
        raise CurateError(f"{shown}: cannot write the output ({e.strerror})") from None
