"""One file or a folder of files through one loaded model: output paths, no clobbering, a progress bar.

A folder input is searched recursively for files with the given endings; each output keeps its
file's path relative to the input folder, under the output folder, with the new ending. A file that
fails is reported on its own `error:` line and the others go on; the run fails at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from utils.errors import CodecError, shown
from utils.files import check_output_folder, file_in_the_way, make_output_folder

logger = logging.getLogger(__name__)


def find_files(folder: str, endings: tuple[str, ...]) -> list[Path]:
    """Files under `folder` (recursively, links followed) whose names end in one of `endings` (any case), sorted."""
    endings = tuple(ending.lower() for ending in endings)
    found = []
    for parent, _, names in os.walk(folder, followlinks=True):
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
    return pairs


def refuse_existing(pairs: list[tuple[Path, Path]], force: bool) -> None:
    """Without `force`, an output that exists is an error (before any work is done)."""
    if force:
        return
    existing = [output for _, output in pairs if output.exists()]
    if existing:
        more = f" and {len(existing) - 1} more outputs exist" if len(existing) > 1 else " exists"
        raise CodecError(f"{existing[0]}{more} already: pass -f/--force to replace them")


def run_batch(
    pairs: list[tuple[Path, Path]], work: Callable[[Path, Path], float], description: str
) -> None:
    """Call `work(input, output)` (returning the seconds of audio it coded) for every pair, with a bar.

    The bar shows the real-time factor so far (time spent / audio seconds). Failures are printed as
    they happen; if any, a CodecError at the end says how many.
    """
    failed = 0
    seconds = busy = 0.0
    with tqdm(total=len(pairs), desc=description, unit="file", file=sys.stderr, dynamic_ncols=True) as bar:
        for source, output in pairs:
            started = time.perf_counter()
            try:
                make_output_folder(output.parent, "-o", given=output)
                seconds += work(source, output)
            except Exception as error:  # one bad file must not end the batch: report it and go on
                failed += 1
                message = str(error) if isinstance(error, CodecError) else f"{error.__class__.__name__}: {error}"
                line = message if str(source) in message else f"{source}: {message}"
                bar.write(f"error: {shown(line)}", file=sys.stderr)
            busy += time.perf_counter() - started
            if seconds > 0:
                bar.set_postfix_str(f"RTF {busy / seconds:.3f}")
            bar.update()
    if failed == len(pairs):
        which = "the one file" if failed == 1 else f"all {failed} files"
        raise CodecError(f"{which} failed (listed above): nothing was written")
    if failed:
        raise CodecError(f"{failed} of {len(pairs)} files failed (listed above); the others were written")
    logger.info(f"{len(pairs)} files, {seconds:.1f} s of audio in {busy:.1f} s (RTF {busy / max(seconds, 1e-9):.3f})")
