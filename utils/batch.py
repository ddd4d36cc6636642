"""One file or a folder of files through one loaded model: output paths, no clobbering, a progress bar.

A folder input is searched recursively for files with the given endings; each output keeps its
file's path relative to the input folder, under the output folder, with the new ending; two inputs
that would write one file (`x.wav` beside `x.flac`, or `X.wav` beside it on a disk that ignores letter
case) are refused before any work. A file that fails is reported on its own `error:` line and leaves
no output of this run (nor a folder made for it), and the others go on; the run fails at the end,
saying what was written and what was left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from utils.errors import CodecError, shown
from utils.files import (
    case_twins,
    check_input_exists,
    check_output_folder,
    file_in_the_way,
    ignores_case,
    make_output_folder,
    walk_every_folder,
)

logger = logging.getLogger(__name__)


def find_files(folder: str, endings: tuple[str, ...]) -> list[Path]:
    """Files under `folder` (recursively, links followed) whose names end in one of `endings` (any case), sorted.
    A folder under it that cannot be listed is a CodecError naming it, before any work."""
    endings = tuple(ending.lower() for ending in endings)
    found = []
    listing = walk_every_folder(folder, f"make it readable or move it out of {folder}", followlinks=True)
    for parent, _, names in listing:
        found.extend(Path(parent) / name for name in names if name.lower().endswith(endings))
    return sorted(found)


def plan(source: str, target: str, endings: Iterable[str], suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: `source` -> `target` for a file; for a folder, each matching file under
    `source` -> the same relative path under `target`, its ending replaced by `suffix` (files under
    `target`, where it lies inside `source`, are not inputs)."""
    endings = tuple(endings)
    for option, path in (("-i", source), ("-o", target)):
        if path == "-":  # read as a file named "-", which the user did not mean
            raise CodecError(f"{option} -: standard input and output are not read or written: give a file path")
    if not os.path.isdir(source):
        check_input_exists(source)  # before a model is loaded for it
        if os.path.isdir(target):
            raise CodecError(f"-i {source} is a file but -o {target} is a folder: give an output file name")
        if os.path.exists(target) and os.path.exists(source) and os.path.samefile(source, target):
            raise CodecError(f"-o {target} is the input file: give another output name (the input would be lost)")
        check_output_folder(target)  # before the coding, not after it
        return [(Path(source), Path(target))]
    if os.path.exists(target) and not os.path.isdir(target):
        raise CodecError(f"-i {source} is a folder but -o {target} is a file: give an output folder")
    blocking = file_in_the_way(target)
    if blocking is not None:
        raise CodecError(f"-o {target}: {blocking} is a file, not a folder: give another output folder")
    if os.path.realpath(source) == os.path.realpath(target):
        raise CodecError(f"-o {target} is the input folder: give another output folder")
    inputs = find_files(source, endings)
    outputs = os.path.realpath(target)
    if os.path.commonpath([os.path.realpath(source), outputs]) == os.path.realpath(source):
        # -o inside -i: what an earlier run wrote there is output, not input to code again
        inputs = [path for path in inputs if os.path.commonpath([os.path.realpath(path), outputs]) != outputs]
    if not inputs:
        raise CodecError(f"no {'/'.join(endings)} files under {source}: check the folder")
    pairs = [(path, Path(target) / path.relative_to(source).with_suffix(suffix)) for path in inputs]
    seen: dict[Path, Path] = {}
    for path, output in pairs:
        if output in seen:
            raise CodecError(f"{seen[output]} and {path} would both write {output}: rename one of them")
        seen[output] = path
    make_output_folder(target, "-o")  # one error before the coding where it takes no files, not one per file
    _refuse_case_twins(pairs, target)
    return pairs


def _refuse_case_twins(pairs: list[tuple[Path, Path]], target: str) -> None:
    """Two outputs whose names differ only in letter case (`X.wav` and `x.flac` -> `x.wav`) are one file
    where `target`'s disk ignores case: refused there, before the coding, as the second would replace
    the first. Where the disk tells case apart (Linux's), both are written."""
    twins = case_twins([output for _, output in pairs])
    if twins is not None and ignores_case(target):
        (first, _), (second, output) = pairs[twins[0]], pairs[twins[1]]
        raise CodecError(f"{first} and {second} would both write {output} ({target} ignores letter case in "
                         "names): rename one of them")


def refuse_existing(pairs: list[tuple[Path, Path]], force: bool) -> None:
    """Without `force`, an output that exists is an error (before any work is done)."""
    if force:
        return
    existing = [output for _, output in pairs if output.exists()]
    if existing:
        more = f" and {len(existing) - 1} more outputs exist" if len(existing) > 1 else " exists"
        raise CodecError(f"{existing[0]}{more} already: pass -f/--force to replace them")


def _file_state(path: Path) -> tuple[int, int, int, int] | None:
    """What tells whether the regular file `path` changed (device, inode, size, modification time);
    None where there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None


def _identity(output: Path) -> dict[tuple[int, int], Path]:
    """{(device, inode): output} for the file a work just wrote (none where it wrote none)."""
    state = _file_state(output)
    return {} if state is None else {state[:2]: output}


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def _undo_failed(output: Path, before: tuple[int, int, int, int] | None, made: list[Path]) -> str | None:
    """After a file failed: remove the output its work wrote before failing at a later step (a failed
    file leaves no output of this run) and the folders made for it that hold nothing. Return "kept"
    where an earlier run's output is left as it was, "lost" where the failed work had replaced one."""
    outcome = "kept" if before is not None else None
    if _file_state(output) != before:
        with contextlib.suppress(OSError):
            os.unlink(output)
        outcome = "lost" if before is not None else None
    for folder in made:
        with contextlib.suppress(OSError):  # not empty: another file's output is in it
            os.rmdir(folder)
    return outcome


def _earlier_outputs(left: dict[str, list[Path]]) -> str:
    """The end of the failure line naming the failed files' outputs from an earlier run (-f): those left as
    they were, which are not this run's codings, and those the failed work had replaced, which are gone."""
    fates = {"kept": ("is left as it was", "are left as they were"),
             "lost": ("was replaced before its file failed, and is removed",
                      "were replaced before their files failed, and are removed")}
    notes = []
    for outcome, (one, several) in fates.items():
        paths = left[outcome]
        if len(paths) == 1:
            notes.append(f"{paths[0]}, from an earlier run, {one}")
        elif paths:
            notes.append(f"{paths[0]} and {len(paths) - 1} more outputs of the failed files, from an earlier run, "
                         f"{several}")
    return "".join(f"; {note}" for note in notes)


def run_batch(
    pairs: list[tuple[Path, Path]], work: Callable[[Path, Path], float], description: str
) -> None:
    """Call `work(input, output)` (returning the seconds of audio it coded) for every pair, with a bar.

    The bar shows the real-time factor so far (time spent / audio seconds). Failures are printed as
    they happen; a failed file leaves no output of this run (what its work wrote before it failed is
    removed) nor a folder made for it. An output that is a file this run wrote already (one file under
    two names: a disk that ignores case, a link) is never replaced: its input fails. If any failed, a
    CodecError at the end says how many, what was written, and what became of the failed files' outputs
    from an earlier run (with -f).
    """
    failed = 0
    left: dict[str, list[Path]] = {"kept": [], "lost": []}  # failed files' outputs from an earlier run
    written: dict[tuple[int, int], Path] = {}  # (device, inode) of each output this run wrote -> its name
    seconds = busy = 0.0
    with tqdm(total=len(pairs), desc=description, unit="file", file=sys.stderr, dynamic_ncols=True) as bar:
        for source, output in pairs:
            started = time.perf_counter()
            before, made = _file_state(output), _missing_folders(output.parent)
            earlier = written.get(before[:2]) if before is not None else None
            try:
                if earlier is not None:  # a disk that ignores case, or a link: one file under two names
                    raise CodecError(f"{source}: {output} is the file {earlier} that this run wrote (the disk "
                                     "ignores letter case, or a link joins the names): rename one of the inputs")
                make_output_folder(output.parent, "-o", given=output)
                seconds += work(source, output)
                written.update(_identity(output))
            except Exception as error:  # one bad file must not end the batch: report it and go on
                failed += 1
                message = str(error) if isinstance(error, CodecError) else f"{error.__class__.__name__}: {error}"
                line = message if str(source) in message else f"{source}: {message}"
                bar.write(f"error: {shown(line)}", file=sys.stderr)
                outcome = _undo_failed(output, before, made)
                if outcome and earlier is None:  # this run's own output is no earlier run's
                    left[outcome].append(output)
            busy += time.perf_counter() - started
            if seconds > 0:
                bar.set_postfix_str(f"RTF {busy / seconds:.3f}")
            bar.update()
    if failed == len(pairs):
        which = "the one file" if failed == 1 else f"all {failed} files"
        raise CodecError(f"{which} failed (listed above): nothing was written{_earlier_outputs(left)}")
    if failed:
        raise CodecError(f"{failed} of {len(pairs)} files failed (listed above); the others were written"
                         f"{_earlier_outputs(left)}")
    logger.info(f"{len(pairs)} files, {seconds:.1f} s of audio in {busy:.1f} s (RTF {busy / max(seconds, 1e-9):.3f})")
