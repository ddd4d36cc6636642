"""Demo-corpus preparation on synthetic audio, without the network: the pure conversion steps and a
whole build over a fake unpacked-package tree."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from bin import prepare_demo_corpus as corpus
from utils.eval.probe import speech_like_signal


def power_db(audio: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(audio, np.float64) ** 2)))


def test_trim_silence_keeps_the_active_span_plus_margin():
    rate = 16000
    speech = speech_like_signal(0.5, rate, seed=1)
    speech[:10] = speech[-10:] = 0.1  # the edges of the active span are loud, so the span is exact
    audio = np.concatenate([np.zeros(rate), speech, 1e-5 * np.ones(rate // 2, np.float32)])
    trimmed = corpus.trim_silence(audio, rate, frame_ms=10.0, margin_ms=20.0)
    margin = int(0.02 * rate)
    assert len(speech) <= len(trimmed) <= len(speech) + 2 * margin + 2 * int(0.01 * rate)
    assert np.max(np.abs(trimmed)) == np.max(np.abs(speech))


def test_trim_silence_of_silence_is_empty():
    assert len(corpus.trim_silence(np.zeros(8000, np.float32), 16000)) == 0
    assert len(corpus.trim_silence(1e-5 * np.ones(8000, np.float32), 16000)) == 0


@pytest.mark.parametrize(("rate_in", "rate_out"), [(44100, 48000), (22050, 48000), (48000, 24000), (8000, 48000)])
def test_resample_length(rate_in, rate_out):
    audio = speech_like_signal(1.0, rate_in)
    assert len(corpus.resample(audio, rate_in, rate_out)) == rate_out


def test_to_mono_and_peak_normalize():
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1)
    assert np.allclose(corpus.to_mono(stereo), 0.25)
    normalized = corpus.peak_normalize(speech_like_signal(0.5, 16000), peak_dbfs=-6.0)
    assert np.max(np.abs(normalized)) == pytest.approx(10 ** (-6 / 20), rel=1e-5)


def test_tile_noise_loops_from_offset():
    assert corpus.tile_noise(np.arange(4.0), 6, offset=3).tolist() == [3, 0, 1, 2, 3, 0]


@pytest.mark.parametrize("snr_db", [0.0, 3.3, 7.5, 15.0])
def test_mix_at_snr_gives_the_snr(snr_db):
    clean = speech_like_signal(1.0, 16000, seed=5)
    noise = np.random.default_rng(0).standard_normal(3000).astype(np.float32)  # shorter: looped
    noisy = corpus.mix_at_snr(clean, noise, snr_db, offset=1234)
    assert noisy.shape == clean.shape
    assert power_db(clean) - power_db(noisy - clean) == pytest.approx(snr_db, abs=0.1)


def test_split_groups_is_disjoint_deterministic_and_fills_every_subset():
    seconds = {f"lang{i:02d}": float(10 + 7 * i % 23) for i in range(30)}
    split = corpus.split_groups(seconds, {"test": 0.1, "dev": 0.1}, seed=3)
    assert split == corpus.split_groups(seconds, {"test": 0.1, "dev": 0.1}, seed=3)
    assert set(split) == set(seconds) and set(split.values()) == {"train", "dev", "test"}
    total = sum(seconds.values())
    for subset in ("test", "dev"):
        share = sum(seconds[g] for g, s in split.items() if s == subset) / total
        assert 0.05 < share <= 0.125 + 1e-9
    assert split != corpus.split_groups(seconds, {"test": 0.1, "dev": 0.1}, seed=4)


def test_split_groups_gives_small_sets_one_group_each():
    split = corpus.split_groups({"a": 100.0, "b": 1.0, "c": 2.0}, {"test": 0.01, "dev": 0.01})
    assert sorted(split.values()) == ["dev", "test", "train"]
    with pytest.raises(ValueError):
        corpus.split_groups({"a": 1.0, "b": 1.0}, {"test": 0.1, "dev": 0.1})


def test_safe_name_romanizes_bopomofo():
    assert corpus.safe_name("ㄇㄧㄢ2_3") == "mian2_3"
    assert corpus.safe_name("a b/é.x") == "a_b__.x"


def write_clip(path, seconds: float, rate: int = 22050, seed: int = 0, noise: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if noise:
        audio = 0.3 * np.random.default_rng(seed).standard_normal(int(seconds * rate))
    else:
        audio = speech_like_signal(seconds, rate, seed=seed)
    sf.write(path, np.pad(audio, rate // 10), rate)


def fake_packages(root):
    """A tree shaped like the unpacked Debian packages, filled with short synthetic clips."""
    roots = {package: root / package for package in corpus.SPEECH_PACKAGES + corpus.NOISE_PACKAGES}
    sounds = roots["ktuberling-data"] / "usr/share/ktuberling/sounds"
    for index, language in enumerate(["de", "fr", "it", "ru", "sr@latin", "nn"]):
        for word in range(3):
            write_clip(sounds / language / f"word{word}.ogg", 0.5, seed=10 * index + word)
    write_clip(sounds / "fr" / "tiny.wav", 0.1)
    letters = roots["klettres-data"] / "usr/share/klettres"
    for index, (language, kind) in enumerate([("en", "alpha"), ("en_GB", "alpha"), ("nb", "syllab"), ("ml", "alpha")]):
        write_clip(letters / language / kind / "a-0.ogg", 0.6, seed=100 + index)
    write_clip(roots["gcin-voice"] / "usr/share/gcin-voice/ogg/ㄇㄚ/3.ogg", 0.5, seed=7)
    alsa = roots["alsa-utils"] / "usr/share/sounds/alsa"
    write_clip(alsa / "Front_Center.wav", 0.8, rate=48000, seed=8)
    write_clip(alsa / "Noise.wav", 2.0, rate=48000, seed=9, noise=True)
    for index, stem in enumerate(corpus.SONIC_PI_NOISES):
        path = roots["sonic-pi-samples"] / f"usr/share/sonic-pi/samples/{stem}.flac"
        write_clip(path, 1.0, seed=20 + index, noise=True)
    for index, stem in enumerate(corpus.LMMS_NOISES):
        write_clip(roots["lmms-common"] / f"usr/share/lmms/samples/{stem}.ogg", 1.0, seed=40 + index, noise=True)
    for package, package_root in roots.items():
        (package_root / "usr/share/doc" / package).mkdir(parents=True, exist_ok=True)
        (package_root / "usr/share/doc" / package / "copyright").write_text(f"{package} copyright\n")
    return {package: (package_root, "1.0") for package, package_root in roots.items()}


def test_build_corpus_on_fake_packages(tmp_path, monkeypatch):
    unpacked = fake_packages(tmp_path / "debs")
    monkeypatch.setattr(corpus, "fetch_packages", lambda packages, cache_dir: unpacked)
    out, out24k = tmp_path / "corpus", tmp_path / "corpus24k"
    split = corpus.build_corpus(out, out24k, tmp_path / "debs", seed=0)

    assert split == json.loads((out / "SPLIT.json").read_text())
    languages = {subset: set(split["subsets"][subset]["languages"]) for subset in corpus.SUBSETS}
    assert languages["train"].isdisjoint(languages["test"]) and languages["train"].isdisjoint(languages["dev"])
    assert languages["dev"].isdisjoint(languages["test"])
    assert set().union(*languages.values()) == {"de", "fr", "it", "ru", "no", "en", "ml", "zh"}
    assert split["skipped"]["speech"]["ktuberling-data"] == {"shorter than 0.3 s after trimming": 1}

    mixes = json.loads((out / "MIXES.json").read_text())
    noises = {subset: set(split["noisy"][f"noisy_{subset}"]["noises"]) for subset in corpus.SUBSETS}
    assert noises["train"].isdisjoint(noises["test"]) and all(noises.values())
    for subset in corpus.SUBSETS:
        clean = sorted(p.relative_to(out / subset) for p in (out / subset).rglob("*.wav"))
        assert len(clean) == split["subsets"][subset]["clips"] > 0
        assert clean == sorted(p.relative_to(out / f"noisy_{subset}") for p in (out / f"noisy_{subset}").rglob("*.wav"))
        assert clean == sorted(p.relative_to(out24k / subset) for p in (out24k / subset).rglob("*.wav"))
        for name in clean:
            info = sf.info(out / subset / name)
            assert (info.samplerate, info.channels, info.subtype) == (48000, 1, "PCM_16")
            assert info.duration >= corpus.MIN_SECONDS
            assert sf.info(out24k / f"noisy_{subset}" / name).samplerate == 24000
            mix = mixes[f"noisy_{subset}"][str(name)]
            assert 0.0 <= mix["snr_db"] <= 15.0 and mix["noise"] in noises[subset]
    assert (out / "LICENSES" / "gcin-voice.copyright").is_file()
    assert (out / "test").exists() and not list(out.glob(".staging"))
    assert any(p.name == "ma_3.wav" for p in out.rglob("*.wav"))


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not found (Debian tools)")
def test_fetch_packages_unpacks_a_cached_deb_without_downloading(tmp_path):
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        "Package: demo-voice\nVersion: 1:2.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
    )
    (tree / "usr/share/doc/demo-voice").mkdir(parents=True)
    (tree / "usr/share/doc/demo-voice/copyright").write_text("free\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(
        ["dpkg-deb", "--build", str(tree), str(cache / "demo-voice_1%3a2.0-1_all.deb")], check=True, capture_output=True
    )
    unpacked = corpus.fetch_packages(("demo-voice",), cache)
    root, version = unpacked["demo-voice"]
    assert version == "1:2.0-1"
    assert (root / "usr/share/doc/demo-voice/copyright").read_text() == "free\n"
    assert corpus.fetch_packages(("demo-voice",), cache) == unpacked


def test_an_output_folder_that_cannot_be_made_is_one_error_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus, "fetch_packages", lambda *_: pytest.fail("packages fetched before the check"))
    (tmp_path / "file").write_text("not a folder")
    assert corpus.main(["--out", str(tmp_path / "file" / "corpus"), "--out24k", str(tmp_path / "c24")]) == 2
    assert capsys.readouterr().err.strip() == (f"prepare_demo_corpus: error: --out {tmp_path / 'file' / 'corpus'}: "
                                               f"cannot create it ({tmp_path / 'file'} is a file): give another path")
    assert corpus.main(["--out", str(tmp_path / "c48"), "--out24k", str(tmp_path / "file" / "c24")]) == 2
    assert capsys.readouterr().err.startswith(f"prepare_demo_corpus: error: --out24k {tmp_path / 'file' / 'c24'}:")


def test_a_build_cut_short_leaves_no_corpus(tmp_path, monkeypatch):
    unpacked = fake_packages(tmp_path / "debs")
    monkeypatch.setattr(corpus, "fetch_packages", lambda packages, cache_dir: unpacked)

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(corpus, "mix_subset", disk_full)
    out, out24k = tmp_path / "corpus", tmp_path / "corpus24k"
    with pytest.raises(OSError, match="No space left"):
        corpus.main(["--out", str(out), "--out24k", str(out24k), "--cache", str(tmp_path / "debs")])
    assert not out.exists() and not out24k.exists()
