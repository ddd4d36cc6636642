"""Files and folders as the commands meet them: outputs written atomically (a temp file beside the
target, renamed into place once complete) and checked before the work; inputs and folders the user
may not read named in one line (`read_failure`, `walk_every_folder`)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from utils.errors import CodecError


def default_file_mode(executable: bool = False) -> int:
    """The permissions a new file gets under the current umask (0o666 & ~umask; 0o777 & ~umask for
    an `executable` one, as a linker's output)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if executable else 0o666) & ~umask


def file_in_the_way(folder: str | os.PathLike) -> str | None:
    """The nearest existing one of `folder` and its parents when it is a file, not a folder."""
    folder = os.path.abspath(folder)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder if os.path.exists(folder) and not os.path.isdir(folder) else None


def walk_every_folder(
    root: str | os.PathLike, fix: str, kind: type[CodecError] = CodecError, followlinks: bool = False
) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk(root)`, where a folder under `root` that cannot be listed, for want of read permission
    say, raises `kind` naming it, the system's reason and `fix` (`root` itself: "make it readable"):
    os.walk passes over such a folder quietly, and a command would report success over fewer files
    than it was given."""

    def unlistable(error: OSError) -> None:
        reason = error.strerror or error
        if os.path.abspath(error.filename) == os.path.abspath(root):
            raise kind(f"cannot list {root} ({reason}): make it readable") from None
        raise kind(f"cannot list {error.filename} ({reason}): {fix}; its files would be left out") from None

    return os.walk(root, followlinks=followlinks, onerror=unlistable)


def same_path(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same after links, `.` and `..` are resolved, or (both
    existing) the same file on disk (hard links)."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    return os.path.exists(first) and os.path.exists(second) and os.path.samefile(first, second)


def write_failure(path: str | os.PathLike, error: OSError, kind: type[CodecError] = CodecError) -> CodecError:
    """The one-line error (of type `kind`) for an OSError met writing `path`: what the system said,
    and the fix."""
    if error.errno == errno.ENOSPC:
        return kind(f"no space left on device writing {path}: free space or write elsewhere")
    if error.errno == errno.EDQUOT:
        return kind(f"disk quota exceeded writing {path}: free space or write elsewhere")
    return kind(f"cannot write {path} ({error.strerror or error}): give another output path")


def read_failure(path: str | os.PathLike, error: OSError, kind: type[CodecError] = CodecError) -> CodecError:
    """The one-line error (of type `kind`) for an OSError met opening or reading the input `path`: what
    the system said, and the fix (a file the user may not read is made readable, not replaced)."""
    if isinstance(error, PermissionError):
        return kind(f"cannot read {path} (permission denied): make it readable for this user (chmod +r)")
    return kind(f"cannot read {path} ({error.strerror or error}): check the file")


def check_input_exists(path: str | os.PathLike, error: type[CodecError] = CodecError) -> None:
    """Raise ``error`` where the input `path` names nothing (a command checks it before loading a model)."""
    if not os.path.exists(path):
        raise error(f"input file {path} does not exist: check the path")


def check_readable(path: str | os.PathLike, kind: type[CodecError] = CodecError) -> None:
    """Raise `read_failure`'s error where the regular file `path` cannot be opened for reading. For the
    readers whose library hides the system's reason (libsndfile's "System error", torch.load): they call
    it when they fail, so that a file the user may not read is not called damaged."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise read_failure(path, error, kind) from None


def check_output_folder(path: str | os.PathLike, error: type[CodecError] = CodecError) -> None:
    """Raise ``error`` naming the problem when `path`'s folder cannot take a new file: it does not exist,
    a file stands where a folder of it should be, or it takes no files (read-only, not a real folder);
    or `path` names a folder (one that exists, or with a trailing separator), which no file can be
    written as; or `path` is a file this user may not replace (`_kept_from_this_user`). A command
    calls it before its work, so that it is not lost to an unwritable output."""
    text = os.fspath(path)
    if os.path.isdir(text) or text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        raise error(f"cannot write {path}: it names a folder: give a file name")
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(folder):
        try:
            handle, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        except OSError as failure:
            raise write_failure(path, failure, error) from None
        os.close(handle)
        os.unlink(probe)
        if _kept_from_this_user(path):
            raise error(f"cannot replace {path}: it is another user's, in a folder where only its owner may replace "
                        "it (the sticky bit, as in /tmp): give another output path")
        return
    blocking = file_in_the_way(folder)
    if blocking is not None:
        raise error(f"cannot write {path}: {blocking} is a file, not a folder: give another output path")
    raise error(f"output folder {folder} does not exist: create it first")


def _kept_from_this_user(path: str | os.PathLike) -> bool:
    """Whether `path` is a file that this user may not replace though its folder takes new files:
    another user's, in a folder with the sticky bit (/tmp's), where only the owner of the file or of
    the folder, or root, may rename over it (an output's temp file is renamed over it at the end)."""
    if not hasattr(os, "geteuid"):  # Windows has no such rule
        return False
    try:
        file_info = os.lstat(path)
        folder_info = os.stat(os.path.dirname(os.path.abspath(path)) or ".")
    except OSError:  # no file there yet
        return False
    user = os.geteuid()
    return bool(folder_info.st_mode & stat.S_ISVTX) and user not in (0, file_info.st_uid, folder_info.st_uid)


def ignores_case(folder: str | os.PathLike) -> bool:
    """Whether the file system of `folder` (an existing folder that takes files) finds a file by a name
    that differs from its own only in letter case, as macOS's and Windows' disks do by default: two
    outputs named so would be one file there, and the second would replace the first. Probed with a
    temp file of a mixed-case name, looked up by its case-swapped name."""
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-Case-")
    except OSError:  # the writes that follow meet it too, and say so
        return False
    os.close(handle)
    try:
        twin = os.path.join(os.path.dirname(probe), os.path.basename(probe).swapcase())
        return os.path.exists(twin) and os.path.samefile(probe, twin)
    finally:
        os.unlink(probe)


def case_twins(paths: Sequence[str | os.PathLike]) -> tuple[int, int] | None:
    """The positions of the first two of `paths` that differ only in letter case (`X.wav`, `x.wav`),
    or None: one file where the disk ignores case (`ignores_case`)."""
    first_of: dict[str, int] = {}
    for position, path in enumerate(paths):
        key = os.fspath(path).casefold()
        if key in first_of:
            return first_of[key], position
        first_of[key] = position
    return None


# The topmost folder each make_output_folder call created, for remove_unfilled_folders.
_MADE: list[Path] = []


def make_output_folder(folder: str | os.PathLike, option: str, given: str | os.PathLike | None = None) -> Path:
    """Create ``folder`` (and its parents) for an output, before the work that fills it; where it cannot
    be, or it takes no files, a CodecError names ``option``, the path ``given`` for it (default
    ``folder``) and what is in the way. The folders it creates are removed again by
    `remove_unfilled_folders` while they hold no file (a command whose work then fails leaves no
    empty folders behind)."""
    folder = Path(folder)
    where = "it" if given is None else str(folder)
    top = Path(os.path.abspath(folder))
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    try:
        if not top.exists():
            _MADE.append(top)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocking = file_in_the_way(folder)
        reason = f"{blocking} is a file" if blocking is not None else error.strerror
        raise CodecError(
            f"{option} {folder if given is None else given}: cannot create {where} ({reason}): give another path"
        ) from None
    try:  # a folder that exists may still take no files: read-only, full, not a real folder (/proc)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    except OSError as error:
        raise CodecError(
            f"{option} {folder if given is None else given}: cannot write files in {where} ({error.strerror}): "
            "give another path"
        ) from None
    os.close(handle)
    os.unlink(probe)
    return folder


def remove_unfilled_folders() -> None:
    """Remove the folders `make_output_folder` created in this process that hold no file (folders
    inside them that hold none go too); called when a command fails."""
    while _MADE:
        top = _MADE.pop()
        for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):  # not empty, or already gone
                os.rmdir(folder)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temp file path in `path`'s folder; when the block ends without error, rename it to `path`.

    The target is never half-written: on any error the temp file is removed and `path` is untouched.
    `tempfile.mkstemp` makes files readable by their owner only; outputs (audio, .adc files,
    checkpoints) are meant to be shared like any file the user writes, so the umask's mode is set
    before the rename.
    """
    folder = os.path.dirname(os.path.abspath(path)) or "."
    try:
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    except OSError as error:  # a folder that does not take files: read-only, full, not a real folder
        raise write_failure(path, error) from None
    os.close(handle)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


Writer = Callable[[BinaryIO], None]  # writes a file's contents to the stream it is given


def write_outputs(files: Mapping[str | os.PathLike, bytes | Writer]) -> None:
    """Write each of `files` (path -> its bytes, or a function that writes them to an open stream, so
    that a large file is not built in memory first) through :func:`atomic_output`, renaming none into
    place before all are written: a failure (a full disk, say) leaves none of them, and is raised as a
    CodecError naming the path and the system's reason (`write_failure`)."""
    path: str | os.PathLike = ""
    try:
        with contextlib.ExitStack() as stack:
            for path, data in files.items():
                tmp = stack.enter_context(atomic_output(path, os.path.splitext(path)[1]))
                with open(tmp, "wb") as stream:
                    if callable(data):
                        data(stream)
                    else:
                        stream.write(data)
    except OSError as error:
        raise write_failure(path, error) from None


def write_bytes_atomic(path: str | os.PathLike, data: bytes, suffix: str = "") -> None:
    """Write `data` to `path` through :func:`atomic_output`; a failure (a full disk, say) is a CodecError
    naming the path and the system's reason (`write_failure`), and leaves `path` as it was."""
    try:
        with atomic_output(path, suffix) as tmp, open(tmp, "wb") as stream:
            stream.write(data)
    except OSError as error:
        raise write_failure(path, error) from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` through :func:`atomic_output`."""
    write_bytes_atomic(path, text.encode("utf-8"))
