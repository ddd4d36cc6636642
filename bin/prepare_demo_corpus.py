"""Build a small demo speech corpus (and a paired noisy/clean set) from Debian-packaged recordings.

    python bin/prepare_demo_corpus.py [--out corpus] [--out24k corpus24k] [--cache .cache/debs] [--seed 0]

Speech: spoken words in about 20 languages (``ktuberling-data``), spoken letters and syllables
(``klettres-data``), Mandarin syllables (``gcin-voice``) and the ALSA channel announcements
(``alsa-utils``). Noise: ambience, vinyl hiss and machine loops (``sonic-pi-samples``), crowd,
applause and breath (``lmms-common``) and the ALSA pink noise.

The packages are fetched with ``apt-get download`` (no install) and unpacked with ``dpkg -x`` into the
cache folder. Every clip is mixed to mono, resampled to 48 kHz with soxr, trimmed of leading and
trailing silence, dropped when shorter than 0.3 s, peak-normalized to -6 dBFS and written as 16-bit
PCM wav to ``<out>/{train,dev,test}/<package>/<locale>/<name>.wav``, plus a 24 kHz copy under the
same relative name in ``<out24k>``. Languages are the split unit (the same language never appears in
two subsets, whichever package it comes from), so no speaker is shared between test and train.
``<out>/noisy_{train,dev,test}`` hold the same relative names mixed with noise at an SNR drawn
uniformly in [0, 15] dB (a draw that would clip is redrawn); each subset draws from its own
disjoint set of noise recordings. ``<out>/SPLIT.json`` records the split, counts and seconds;
``<out>/MIXES.json`` each mix's noise, SNR and offset; ``<out>/LICENSES/<package>.copyright`` the
packages' copyright files. Everything is seeded.

The conversion steps (:func:`to_mono`, :func:`resample`, :func:`trim_silence`,
:func:`peak_normalize`, :func:`mix_at_snr`, :func:`split_groups`, :func:`safe_name`) are pure
functions on arrays and names, so tests run them on synthetic audio without the network.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
import zlib  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from urllib.parse import unquote  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from utils.audio import resample  # noqa: E402
from utils.errors import ArgumentParser, CodecError  # noqa: E402
from utils.files import make_output_folder, remove_unfilled_folders  # noqa: E402

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
COPY_SAMPLE_RATE = 24000
MIN_SECONDS = 0.3
PEAK_DBFS = -6.0
SNR_RANGE_DB = (0.0, 15.0)
MAX_PLAUSIBLE_RATE = 96000
MAX_MIX_DRAWS = 10
SUBSETS = ("train", "dev", "test")
HELD_OUT_FRACTIONS = {"test": 0.1, "dev": 0.1}
NOISE_HELD_OUT_FRACTIONS = {"test": 0.2, "dev": 0.2}

SPEECH_PACKAGES = ("ktuberling-data", "klettres-data", "gcin-voice", "alsa-utils")
NOISE_PACKAGES = ("sonic-pi-samples", "lmms-common")
# Locale folders naming the same spoken language share a split group.
LANGUAGE_ALIASES = {"en_GB": "en", "pt_BR": "pt", "nb": "no", "nn": "no"}
SONIC_PI_NOISES = (
    "vinyl_hiss",
    "ambi_glass_hum",
    "ambi_haunted_hum",
    "ambi_sauna",
    "ambi_lunar_land",
    "ambi_drone",
    "ambi_dark_woosh",
    "ambi_glass_rub",
    "ambi_soft_buzz",
    "loop_3d_printer",
    "loop_industrial",
)
LMMS_NOISES = ("misc/applause01", "misc/raving_crowd01", "misc/breath01")
BOPOMOFO_PREFIX = "BOPOMOFO LETTER "


@dataclass(frozen=True)
class Clip:
    """One source recording: where it is, the group it is split by, and its output name."""

    path: Path
    package: str
    group: str
    name: str


# ----------------------------------------------------------------------------------------------
# Pure conversion functions


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``(T,)`` or ``(T, C)`` → float32 ``(T,)``, channels averaged."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def trim_silence(
    audio: np.ndarray,
    sample_rate: int,
    threshold_db: float = -40.0,
    floor_dbfs: float = -60.0,
    frame_ms: float = 10.0,
    margin_ms: float = 20.0,
) -> np.ndarray:
    """Cut leading and trailing silence from ``(T,)``.

    A frame is active when its RMS is above ``threshold_db`` relative to the loudest frame and above
    ``floor_dbfs`` absolute. Keeps the span from the first to the last active frame plus
    ``margin_ms`` either side; returns an empty array when no frame is active.
    """
    audio = np.asarray(audio, dtype=np.float32)
    frame = max(1, int(round(frame_ms * sample_rate / 1000)))
    n_frames = -(-len(audio) // frame)
    if n_frames == 0:
        return audio
    padded = np.pad(audio.astype(np.float64), (0, n_frames * frame - len(audio)))
    rms_db = 10 * np.log10(np.mean(padded.reshape(n_frames, frame) ** 2, axis=1) + 1e-20)
    active = np.flatnonzero(rms_db > max(rms_db.max() + threshold_db, floor_dbfs))
    if len(active) == 0:
        return audio[:0]
    margin = int(round(margin_ms * sample_rate / 1000))
    start = max(0, active[0] * frame - margin)
    end = min(len(audio), (active[-1] + 1) * frame + margin)
    return audio[start:end]


def peak_normalize(audio: np.ndarray, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Scale ``(T,)`` so that its absolute peak is ``peak_dbfs``; silence is returned unchanged."""
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak == 0.0:
        return np.asarray(audio, dtype=np.float32)
    return (np.asarray(audio, dtype=np.float64) * (10 ** (peak_dbfs / 20) / peak)).astype(np.float32)


def tile_noise(noise: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """``length`` samples of ``noise`` ``(N,)`` starting at ``offset``, looping around its end."""
    if len(noise) == 0:
        raise ValueError("noise is empty")
    return np.take(np.asarray(noise, dtype=np.float32), (offset + np.arange(length)) % len(noise))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, offset: int = 0) -> np.ndarray:
    """``clean + g * noise`` ``(T,)`` with ``g`` chosen so that the clip-level SNR is ``snr_db``.

    The noise is looped from ``offset`` to the clean length (:func:`tile_noise`); powers are means
    over the whole clip. The result is not clipped: callers keep enough headroom.
    """
    clean = np.asarray(clean, dtype=np.float64)
    noise_part = tile_noise(noise, len(clean), offset).astype(np.float64)
    clean_power = np.mean(clean**2)
    noise_power = np.mean(noise_part**2)
    if noise_power == 0.0:
        raise ValueError("noise segment is silent")
    gain = np.sqrt(clean_power / (noise_power * 10 ** (snr_db / 10)))
    return (clean + gain * noise_part).astype(np.float32)


def split_groups(
    group_seconds: Mapping[str, float],
    held_out_fractions: Mapping[str, float] = HELD_OUT_FRACTIONS,
    seed: int = 0,
    rest: str = "train",
) -> dict[str, str]:
    """Assign whole groups (languages, noise files) to subsets: ``{group: subset}``.

    Groups are visited in a seeded shuffle; each goes to the held-out subset furthest below its
    target share of the total seconds, if it fits (up to 125% of the target), otherwise to ``rest``.
    Every held-out subset gets at least one group (the smallest left in ``rest``), so the function
    needs more groups than held-out subsets.
    """
    if len(group_seconds) <= len(held_out_fractions):
        raise ValueError(f"need more than {len(held_out_fractions)} groups to split, got {len(group_seconds)}")
    total = sum(group_seconds.values())
    targets = {subset: fraction * total for subset, fraction in held_out_fractions.items()}
    filled = dict.fromkeys(held_out_fractions, 0.0)
    order = sorted(group_seconds)
    np.random.default_rng(seed).shuffle(order)
    assignment: dict[str, str] = {}
    for group in order:
        fitting = [s for s in held_out_fractions if filled[s] + group_seconds[group] <= 1.25 * targets[s]]
        subset = max(fitting, key=lambda s: targets[s] - filled[s]) if fitting else rest
        if subset != rest:
            filled[subset] += group_seconds[group]
        assignment[group] = subset
    for subset in held_out_fractions:
        if subset not in assignment.values():
            smallest = min((g for g, s in assignment.items() if s == rest), key=lambda g: (group_seconds[g], g))
            assignment[smallest] = subset
    return assignment


def safe_name(text: str) -> str:
    """An ASCII file-name stem: Bopomofo letters become their romanized names (ㄇㄚ3 → ma3),
    other characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    parts = []
    for char in text:
        if char.isascii() and (char.isalnum() or char in "._-"):
            parts.append(char)
            continue
        unicode_name = unicodedata.name(char, "")
        bopomofo = unicode_name.startswith(BOPOMOFO_PREFIX)
        parts.append(unicode_name[len(BOPOMOFO_PREFIX) :].lower() if bopomofo else "_")
    return "".join(parts)


def clip_seed(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on the global seed and the clip's name, not on visiting order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# ----------------------------------------------------------------------------------------------
# Debian packages


def fetch_packages(packages: tuple[str, ...], cache_dir: Path) -> dict[str, tuple[Path, str]]:
    """Download (``apt-get download``) and unpack (``dpkg -x``) each package into ``cache_dir``.

    Returns ``{package: (unpacked root, version)}``. Packages already in the cache are reused; when a
    download fails, ``apt-get update`` is run once and the download retried.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    missing = [package for package in packages if not list(cache_dir.glob(f"{package}_*.deb"))]
    if missing:
        logger.info("downloading %s", " ".join(missing))
        if subprocess.run(["apt-get", "download", *missing], cwd=cache_dir, capture_output=True).returncode != 0:
            logger.info("apt-get download failed; running apt-get update and retrying")
            subprocess.run(["apt-get", "update"], capture_output=True)
            completed = subprocess.run(["apt-get", "download", *missing], cwd=cache_dir, capture_output=True, text=True)
            if completed.returncode != 0:
                raise CodecError(f"apt-get download {' '.join(missing)} failed: {completed.stderr.strip()[-300:]}")
    unpacked = {}
    for package in packages:
        deb = sorted(cache_dir.glob(f"{package}_*.deb"))[-1]
        version = unquote(deb.name.split("_")[1])
        root = cache_dir / package
        marker = root / ".unpacked"
        if not marker.is_file() or marker.read_text() != deb.name:
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
            marker.write_text(deb.name)
        unpacked[package] = (root, version)
    return unpacked


def speech_clips(roots: Mapping[str, Path]) -> Iterator[Clip]:
    """The speech recordings of the unpacked :data:`SPEECH_PACKAGES`, in a fixed order."""
    audio_suffixes = {".ogg", ".wav", ".opus", ".flac"}
    used_names: Counter = Counter()

    def clip(path: Path, package: str, language: str, stem: str) -> Clip:
        name = f"{package}/{language}/{safe_name(stem)}"
        used_names[name] += 1
        if used_names[name] > 1:
            name = f"{name}-{used_names[name]}"
        return Clip(path, package, LANGUAGE_ALIASES.get(language, language), f"{name}.wav")

    sounds = roots["ktuberling-data"] / "usr/share/ktuberling/sounds"
    for folder in sorted(p for p in sounds.iterdir() if p.is_dir() and "@" not in p.name):
        for path in sorted(folder.iterdir()):
            if path.suffix in audio_suffixes:
                yield clip(path, "ktuberling-data", folder.name, path.stem)
    letters = roots["klettres-data"] / "usr/share/klettres"
    for folder in sorted(p for p in letters.iterdir() if p.is_dir() and p.name not in ("icons", "pics")):
        for kind in ("alpha", "syllab"):
            for path in sorted((folder / kind).glob("*.ogg")):
                yield clip(path, "klettres-data", folder.name, f"{kind}_{path.stem}")
    syllables = roots["gcin-voice"] / "usr/share/gcin-voice/ogg"
    for path in sorted(syllables.glob("*/*.ogg")):
        yield clip(path, "gcin-voice", "zh", f"{path.parent.name}_{path.stem}")
    for path in sorted((roots["alsa-utils"] / "usr/share/sounds/alsa").glob("*.wav")):
        if path.stem != "Noise":
            yield clip(path, "alsa-utils", "en", path.stem)


def noise_clips(roots: Mapping[str, Path]) -> Iterator[Clip]:
    """The noise recordings: picked sonic-pi and LMMS samples and the ALSA pink noise."""
    samples = roots["sonic-pi-samples"] / "usr/share/sonic-pi/samples"
    for stem in SONIC_PI_NOISES:
        yield Clip(samples / f"{stem}.flac", "sonic-pi-samples", stem, f"sonic-pi-samples/{stem}")
    for stem in LMMS_NOISES:
        path = roots["lmms-common"] / "usr/share/lmms/samples" / f"{stem}.ogg"
        yield Clip(path, "lmms-common", Path(stem).name, f"lmms-common/{stem}")
    pink_noise = roots["alsa-utils"] / "usr/share/sounds/alsa/Noise.wav"
    yield Clip(pink_noise, "alsa-utils", "alsa_pink_noise", "alsa-utils/Noise")


# ----------------------------------------------------------------------------------------------
# Corpus building


def load_clip(path: Path, skipped: Counter) -> np.ndarray | None:
    """Read ``path`` as mono 48 kHz float32, or count why it can't be used and return None."""
    try:
        info = sf.info(str(path))
        if info.samplerate > MAX_PLAUSIBLE_RATE:
            skipped["implausible sample rate"] += 1
            return None
        audio, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError):
        skipped["unreadable"] += 1
        return None
    return resample(to_mono(audio), sample_rate, SAMPLE_RATE, np.float32)


def write_pcm16(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")


def prepare_speech(clips: list[Clip], staging: Path) -> tuple[dict[str, float], dict[str, dict[str, int]], list[Clip]]:
    """Convert every speech clip into ``staging/{48k,24k}/<name>``; returns seconds per kept clip name,
    skip counts per package and the kept clips."""
    from tqdm import tqdm

    seconds: dict[str, float] = {}
    skipped: dict[str, Counter] = defaultdict(Counter)
    kept = []
    for clip in tqdm(clips, desc="speech", disable=None):
        audio = load_clip(clip.path, skipped[clip.package])
        if audio is None:
            continue
        audio = trim_silence(audio, SAMPLE_RATE)
        if len(audio) < MIN_SECONDS * SAMPLE_RATE:
            skipped[clip.package]["shorter than 0.3 s after trimming"] += 1
            continue
        audio = peak_normalize(audio)
        write_pcm16(staging / "48k" / clip.name, audio, SAMPLE_RATE)
        audio_24k = resample(audio, SAMPLE_RATE, COPY_SAMPLE_RATE, np.float32)
        write_pcm16(staging / "24k" / clip.name, audio_24k, COPY_SAMPLE_RATE)
        seconds[clip.name] = len(audio) / SAMPLE_RATE
        kept.append(clip)
    return seconds, {package: dict(counts) for package, counts in skipped.items()}, kept


def mix_subset(
    names: list[str],
    clean_dirs: Mapping[int, Path],
    noisy_dirs: Mapping[int, Path],
    noises: Mapping[str, Mapping[int, np.ndarray]],
    seed: int,
) -> dict[str, dict[str, float | str]]:
    """Write the noisy version of each clean clip at both rates; returns the mix parameters per name."""
    mixes: dict[str, dict[str, float | str]] = {}
    noise_names = sorted(noises)
    for name in names:
        rng = clip_seed(seed, name)
        clean = {rate: sf.read(str(clean_dirs[rate] / name), dtype="float32")[0] for rate in clean_dirs}
        # A mix that would clip is drawn again (noise, offset and SNR): clipping would make the
        # noisy input disagree with its clean target. Draw counts are recorded in MIXES.json.
        draws = 0
        while draws < MAX_MIX_DRAWS:
            draws += 1
            noise_name = noise_names[rng.integers(len(noise_names))]
            snr_db = float(rng.uniform(*SNR_RANGE_DB))
            offset_seconds = float(rng.uniform(0.0, len(noises[noise_name][SAMPLE_RATE]) / SAMPLE_RATE))
            noisy = {
                rate: mix_at_snr(clean[rate], noises[noise_name][rate], snr_db, offset=int(offset_seconds * rate))
                for rate in clean_dirs
            }
            peak = max(float(np.max(np.abs(audio))) for audio in noisy.values())
            if peak <= 1.0:
                break
        for rate, audio in noisy.items():
            write_pcm16(noisy_dirs[rate] / name, audio, rate)
        mixes[name] = {"noise": noise_name, "snr_db": round(snr_db, 3), "offset_s": round(offset_seconds, 4)}
        if draws > 1:
            mixes[name]["draws"] = draws
        if peak > 1.0:
            mixes[name]["clipped_peak"] = round(peak, 3)
    return mixes


def build_corpus(out_dir: Path, out24k_dir: Path, cache_dir: Path, seed: int = 0) -> dict:
    """Fetch the packages and write the whole corpus; returns the SPLIT.json content."""
    started = time.time()
    unpacked = fetch_packages(SPEECH_PACKAGES + NOISE_PACKAGES, cache_dir)
    roots = {package: root for package, (root, _) in unpacked.items()}
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)

    clips = list(speech_clips(roots))
    logger.info("%d speech recordings found", len(clips))
    seconds, skipped, kept = prepare_speech(clips, staging)
    group_seconds: dict[str, float] = defaultdict(float)
    for clip in kept:
        group_seconds[clip.group] += seconds[clip.name]
    groups = split_groups(group_seconds, seed=seed)
    subset_names: dict[str, list[str]] = {subset: [] for subset in SUBSETS}
    for clip in kept:
        subset_names[groups[clip.group]].append(clip.name)
    for subset, names in subset_names.items():
        for name in names:
            for rate_dir, target_root in (("48k", out_dir), ("24k", out24k_dir)):
                target = target_root / subset / name
                target.parent.mkdir(parents=True, exist_ok=True)
                (staging / rate_dir / name).replace(target)
    shutil.rmtree(staging)

    noise_audio: dict[str, dict[int, np.ndarray]] = {}
    noise_skipped: dict[str, Counter] = defaultdict(Counter)
    for clip in noise_clips(roots):
        audio = load_clip(clip.path, noise_skipped[clip.package])
        if audio is not None:
            audio = trim_silence(audio, SAMPLE_RATE)
            audio_24k = resample(audio, SAMPLE_RATE, COPY_SAMPLE_RATE, np.float32)
            noise_audio[clip.name] = {SAMPLE_RATE: audio, COPY_SAMPLE_RATE: audio_24k}
    noise_groups = split_groups(
        {name: len(audio[SAMPLE_RATE]) / SAMPLE_RATE for name, audio in noise_audio.items()},
        NOISE_HELD_OUT_FRACTIONS,
        seed=seed,
    )
    mixes: dict[str, dict] = {}
    noisy_summary = {}
    for subset, names in subset_names.items():
        subset_noises = {name: audio for name, audio in noise_audio.items() if noise_groups[name] == subset}
        subset_mixes = mix_subset(
            names,
            {SAMPLE_RATE: out_dir / subset, COPY_SAMPLE_RATE: out24k_dir / subset},
            {SAMPLE_RATE: out_dir / f"noisy_{subset}", COPY_SAMPLE_RATE: out24k_dir / f"noisy_{subset}"},
            subset_noises,
            seed,
        )
        mixes[f"noisy_{subset}"] = subset_mixes
        snrs = [mix["snr_db"] for mix in subset_mixes.values()]
        noisy_summary[f"noisy_{subset}"] = {
            "clips": len(subset_mixes),
            "noises": sorted(subset_noises),
            "noise_seconds": round(sum(len(a[SAMPLE_RATE]) for a in subset_noises.values()) / SAMPLE_RATE, 2),
            "snr_db_min": round(min(snrs), 2) if snrs else None,
            "snr_db_max": round(max(snrs), 2) if snrs else None,
            "redrawn_to_avoid_clipping": sum("draws" in mix for mix in subset_mixes.values()),
            "clipped": sum("clipped_peak" in mix for mix in subset_mixes.values()),
        }

    for root in (out_dir, out24k_dir):
        licenses = root / "LICENSES"
        licenses.mkdir(parents=True, exist_ok=True)
        for package, package_root in roots.items():
            shutil.copyfile(package_root / "usr/share/doc" / package / "copyright", licenses / f"{package}.copyright")

    clip_package = {clip.name: clip.package for clip in kept}
    aliases = ", ".join(f"{alias}={language}" for alias, language in LANGUAGE_ALIASES.items())
    split = {
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "copies": {str(COPY_SAMPLE_RATE): str(out24k_dir)},
        "split_unit": f"language (locale aliases merged: {aliases})",
        "processing": {
            "mono": "channel mean",
            "resampler": "soxr HQ",
            "trim": "frames of 10 ms above -40 dB re loudest frame and -60 dBFS, 20 ms margin",
            "min_seconds": MIN_SECONDS,
            "peak_dbfs": PEAK_DBFS,
            "format": "wav PCM_16 mono",
        },
        "packages": {package: version for package, (_, version) in unpacked.items()},
        "subsets": {
            subset: {
                "clips": len(names),
                "seconds": round(sum(seconds[name] for name in names), 2),
                "languages": sorted({g for g, s in groups.items() if s == subset}),
                "clips_per_package": dict(sorted(Counter(clip_package[name] for name in names).items())),
            }
            for subset, names in subset_names.items()
        },
        "noisy": {"snr_db_range": list(SNR_RANGE_DB), **noisy_summary},
        "skipped": {
            "speech": skipped,
            "noise": {package: dict(counts) for package, counts in noise_skipped.items() if counts},
        },
        "language_seconds": {group: round(value, 2) for group, value in sorted(group_seconds.items())},
        "build_seconds": round(time.time() - started, 1),
    }
    (out_dir / "SPLIT.json").write_text(json.dumps(split, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "MIXES.json").write_text(json.dumps(mixes, indent=1) + "\n")
    shutil.copyfile(out_dir / "SPLIT.json", out24k_dir / "SPLIT.json")
    return split


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("corpus"), help="48 kHz corpus folder (default corpus)")
    parser.add_argument("--out24k", type=Path, help="24 kHz copy folder (default: <out>24k)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/debs"), help="downloaded and unpacked packages")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the noise choice and the SNRs")
    parser.add_argument("--force", action="store_true", help="replace existing corpus folders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out24k = args.out24k or args.out.with_name(args.out.name + "24k")
    folders = {args.out: "--out", out24k: "--out24k"}
    try:
        for folder in folders:
            if folder.exists() and any(folder.iterdir()):
                if not args.force:
                    raise CodecError(f"{folder} already exists and is not empty; pass --force to rebuild it")
                shutil.rmtree(folder)
        for folder, option in folders.items():  # before the packages are fetched and converted
            make_output_folder(folder, option)
        try:
            split = build_corpus(args.out, out24k, args.cache, seed=args.seed)
        except BaseException:
            for folder in folders:  # a corpus cut short is no corpus: leave none
                shutil.rmtree(folder, ignore_errors=True)
            remove_unfilled_folders()
            raise
    except CodecError as error:
        remove_unfilled_folders()
        print(f"prepare_demo_corpus: error: {error}", file=sys.stderr)
        return 2
    for subset, summary in split["subsets"].items():
        languages = " ".join(summary["languages"])
        logger.info("%s: %d clips, %.1f s, languages %s", subset, summary["clips"], summary["seconds"], languages)
    logger.info("skipped: %s", json.dumps(split["skipped"]))
    logger.info("done in %.0f s: %s, %s", split["build_seconds"], args.out, out24k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
