"""Fetch the original AudioDec's released models (generators only) into `<root>/exp/`.

    python -m utils.download vctk_v1 libritts_sym        # the models named, into this toolkit's exp/
    python -m utils.download --all [--root DIR]          # every released model
    python -m utils.download --all --sha256 HEX          # insist on this archive

One archive holds every released model (RELEASE_URL). It is fetched to a `.part` file beside
`exp/` (a cut download resumes from there with an HTTP Range request), then checked before any of
it lands: it must be a zip whose members sit at the registry's `exp/` paths, each checkpoint must
load with `torch.load(weights_only=True)` and hold a generator, each config must build one, and its
SHA-256 must equal `--sha256` or the one recorded when this root last downloaded the same URL (the
hash is printed either way). The checked files are unpacked into a temp folder beside `exp/` and
only then moved into place, so a failed check leaves nothing behind but the error.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable

from utils.checkpoint import build_generator, load_generator_state, read_checkpoint
from utils.errors import ArgumentParser, CodecError
from utils.experiment_config import load_config
from utils.files import write_text_atomic
from utils.registry import MODELS, TOOLKIT_ROOT, ModelEntry, get_entry

RELEASE_URL = "https://github.com/facebookresearch/AudioDec/releases/download/pretrain_models_v02/exp.zip"
RECORD_FILE = os.path.join("exp", ".downloads.json")  # URL -> SHA-256 of the archive last installed from it
CHUNK_BYTES = 1 << 20
ATTEMPTS = 3  # a cut connection is resumed this many times within one run
TIMEOUT_S = 30

logger = logging.getLogger(__name__)


def released_models() -> list[ModelEntry]:
    return [entry for entry in MODELS.values() if entry.released]


def select_models(names: Iterable[str], everything: bool) -> list[ModelEntry]:
    """The registry entries asked for: `--all` is every released model; an unknown name is an error."""
    names = list(names)
    if everything == bool(names):
        raise CodecError("name the models to fetch (e.g. vctk_v1) or pass --all, not both")
    if everything:
        return released_models()
    entries = [get_entry(name) for name in names]
    for entry in entries:
        if not entry.released:
            ships = "it ships with this toolkit" if entry.shipped else "it is a model of one's own, not downloaded"
            raise CodecError(f"model '{entry.name}' is not in the released archive: {ships}")
    return entries


def model_files(entries: Iterable[ModelEntry]) -> list[str]:
    """The `exp/` paths (checkpoints and the config beside each) that the models need, sorted."""
    paths = set()
    for entry in entries:
        for checkpoint in (entry.encoder, entry.decoder):
            paths.update((checkpoint, os.path.join(os.path.dirname(checkpoint), "config.yml")))
    return sorted(paths)


def part_path(root: str, url: str) -> str:
    """Where the download of `url` into `root` collects its bytes until it is complete."""
    tag = hashlib.sha256(url.encode()).hexdigest()[:12]
    return os.path.join(root, f".exp-download-{tag}.part")


def local_archive(url: str) -> str | None:
    """The file a mirror on this machine names (a path, or a file:// URL), checked; None for a URL to fetch."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
    elif "://" not in url:
        path = url
    else:
        return None
    if not os.path.isfile(path):
        raise CodecError(f"--url {url}: no such file: give the release archive's path or URL")
    return path


def fetch(url: str, path: str, attempts: int = ATTEMPTS) -> None:
    """Download `url` to `path`, continuing a partial `path` with an HTTP Range request.

    A cut connection is resumed up to `attempts` times; after that the partial file stays for the
    next run. A server that ignores Range sends the whole file again, which replaces the partial one.
    """
    reason = ""
    for _ in range(attempts):
        have = os.path.getsize(path) if os.path.isfile(path) else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as error:
            if error.code == 416 and have:  # the partial file is not a prefix of this archive
                os.unlink(path)
                continue
            _drop_if_empty(path)
            raise CodecError(f"{url} answered HTTP {error.code} ({error.reason}): check --url") from None
        except (urllib.error.URLError, OSError, ValueError) as error:  # ValueError: a URL urllib cannot parse
            _drop_if_empty(path)
            cause = getattr(error, "reason", error)
            raise CodecError(f"cannot reach {url} ({cause}): check the network connection, or pass --url") from None
        with response:
            resumed = response.status == 206
            expected = response.length  # bytes still to come (None: the server did not say)
            total = have + expected if resumed and expected is not None else expected
            if resumed:
                logger.info(f"resuming at {have / 1e6:.1f} MB")
            received = 0
            try:
                with open(path, "ab" if resumed else "wb") as out:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        received += len(chunk)
            except (http.client.HTTPException, OSError) as error:
                reason = error.__class__.__name__
            else:
                if expected is None or received >= expected:
                    return
                reason = f"connection closed after {received} of {expected} bytes"
        size = os.path.getsize(path)
        logger.warning(f"download cut at {size / 1e6:.1f} of {(total or 0) / 1e6:.1f} MB ({reason}); resuming")
    raise CodecError(
        f"download of {url} cut {attempts} times ({reason}): run the same command again to resume from {path}"
    )


def _drop_if_empty(path: str) -> None:
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        os.unlink(path)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def archive_prefix(names: list[str]) -> str:
    """What the archive puts before a registry path's `exp/` part: usually `exp/` itself.

    The prefix is read off the first member that ends in a registered checkpoint path; an archive
    with none is not the release archive.
    """
    tails = {path[len("exp/"):] for path in model_files(MODELS.values())}
    for name in names:
        for tail in tails:
            if name == tail or name.endswith("/" + tail):
                return name[: len(name) - len(tail)]
    raise CodecError("the archive holds none of the registry's exp/ checkpoints: it is not the AudioDec "
                     "release archive; check --url")


def unpack(archive: str, wanted: list[str], root: str) -> None:
    """Extract the `exp/` paths `wanted` from `archive`, check every one, then move them under `root`."""
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise CodecError("the download is not a zip archive: it is not the AudioDec release archive; "
                         "check --url") from None
    staging = tempfile.mkdtemp(dir=root, prefix=".tmp-download-")
    try:
        with bundle:
            names = bundle.namelist()
            prefix = archive_prefix(names)
            missing = [path for path in wanted if prefix + path[len("exp/"):] not in names]
            if missing:
                raise CodecError(f"the archive lacks {missing[0]} ({len(missing)} files missing): check --url")
            for path in wanted:
                target = os.path.join(staging, path)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with bundle.open(prefix + path[len("exp/"):]) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
        for path in wanted:
            if path.endswith(".pkl"):
                check_checkpoint(os.path.join(staging, path), path)
        for path in wanted:  # configs first: a checkpoint found without its config would be an error
            if not path.endswith(".pkl"):
                _move_into_place(staging, path, root)
        for path in wanted:
            if path.endswith(".pkl"):
                _move_into_place(staging, path, root)
    except zipfile.BadZipFile as error:
        raise CodecError(f"the archive is damaged ({error}): run the command again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_checkpoint(path: str, name: str) -> None:
    """A generator checkpoint that loads with weights_only=True and fits the config beside it."""
    try:
        state = read_checkpoint(path)
        load_generator_state(build_generator(load_config(path)), state["model"]["generator"])
    except CodecError as error:
        raise CodecError(f"{name} in the archive failed its check ({error}); nothing was installed") from None


def _move_into_place(staging: str, path: str, root: str) -> None:
    target = os.path.join(root, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(os.path.join(staging, path), target)


def read_record(root: str) -> dict[str, str]:
    path = os.path.join(root, RECORD_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(root: str, url: str, sha256: str) -> None:
    record = read_record(root)
    record[url] = sha256
    write_text_atomic(os.path.join(root, RECORD_FILE), json.dumps(record, indent=1, sort_keys=True) + "\n")


def download(
    entries: list[ModelEntry], root: str, url: str = RELEASE_URL, sha256: str | None = None
) -> list[str]:
    """Install the files of `entries` that `root` lacks from the archive at `url`; return the paths installed."""
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower())):
        raise CodecError(f"--sha256 {sha256}: give the 64 hex digits of the archive's SHA-256")
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise CodecError(f"--root {root} is a file: give the folder that holds (or is to hold) exp/")
        raise CodecError(f"--root {root} does not exist: create it first")
    wanted = [path for path in model_files(entries) if not os.path.isfile(os.path.join(root, path))]
    if not wanted:
        logger.info(f"already installed under {root}: {', '.join(entry.name for entry in entries)}")
        return []
    expected = (sha256 or read_record(root).get(url) or "").lower() or None
    archive = local_archive(url)
    if archive is None:
        archive = part_path(root, url)
        logger.info(f"fetching {url}")
        fetch(url, archive)
    try:
        digest = sha256_of(archive)
        logger.info(f"archive sha256 {digest}")
        if expected and digest != expected:
            source = "--sha256" if sha256 else f"the hash recorded in {RECORD_FILE}"
            raise CodecError(f"archive sha256 {digest} differs from {source} ({expected}): the download is "
                             "damaged or the release changed; nothing was installed")
        unpack(archive, wanted, root)
    finally:
        if archive == part_path(root, url):
            os.unlink(archive)
    write_record(root, url, digest)
    for entry in entries:
        logger.info(f"installed {entry.name} under {root}")
    return wanted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="registered model names (see --list-models)")
    parser.add_argument("--all", action="store_true", help="every released model")
    parser.add_argument("--root", default=TOOLKIT_ROOT, help="folder to install exp/ into (default: this toolkit)")
    parser.add_argument("--sha256", help="the archive's expected SHA-256 (default: the one recorded, if any)")
    parser.add_argument("--url", default=RELEASE_URL,
                        help="where the release archive is: a mirror's URL, or a copy on this machine (a path)")
    parser.add_argument("--list-models", action="store_true", help="which models are installed where, and how to "
                        "get the others; downloads nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list_models:
        from utils.cli import list_models

        list_models(os.path.abspath(args.root))
        return
    download(select_models(args.names, args.all), os.path.abspath(args.root), args.url, args.sha256)


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main)
