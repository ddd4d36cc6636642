"""Folder mode of codec.py and demoFile.py (tree kept, model loaded once, bad files reported), evaluate.py on files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import OFFICIAL, REPO, official_path
from utils.batch import plan, run_batch
from utils.errors import CodecError
from utils.eval.metrics import mel_axis_ticks

RATE = 48000


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=OFFICIAL,
                          capture_output=True, text=True, timeout=180)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("error:")]


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest.fixture
def corpus(tmp_path) -> Path:
    """in/a.wav, in/sub/deeper/b.flac (0.3 s each), in/notes.txt, in/sub/broken.wav (not audio)."""
    audio, _ = sf.read(official_path("input", "test_48k.wav"))
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    sf.write(root / "a.wav", audio[: 14400], RATE, "PCM_16")
    sf.write(root / "sub" / "deeper" / "b.flac", audio[14400:28800], RATE)
    (root / "notes.txt").write_text("not audio, not picked up")
    (root / "sub" / "broken.wav").write_text("not audio but named like it")
    return root


def test_codec_folder_round_trip(tmp_path, corpus: Path) -> None:
    packed, decoded = tmp_path / "adc", tmp_path / "wav"
    result = run("codec.py", "encode", "--model", "vctk_sym", "-i", str(corpus), "-o", str(packed))
    assert result.returncode == 1
    assert error_lines(result) == [
        error_lines(result)[0], "error: 1 of 3 files failed (listed above); the others were written"]
    assert f"{corpus / 'sub' / 'broken.wav'}" in error_lines(result)[0]
    assert "RTF" in result.stderr and "3/3" in result.stderr  # the progress bar
    assert tree(packed) == ["a.adc", "sub/deeper/b.adc"]

    again = run("codec.py", "encode", "--model", "vctk_sym", "-i", str(corpus), "-o", str(packed))
    assert error_lines(again) == [f"error: {packed / 'a.adc'} and 1 more outputs exist already: "
                                  "pass -f/--force to replace them"]

    result = run("codec.py", "decode", "-i", str(packed), "-o", str(decoded))
    assert result.returncode == 0, result.stderr
    assert tree(decoded) == ["a.wav", "sub/deeper/b.wav"]
    single = tmp_path / "single.wav"
    assert run("codec.py", "decode", "-i", str(packed / "a.adc"), "-o", str(single)).returncode == 0
    np.testing.assert_array_equal(sf.read(decoded / "a.wav")[0], sf.read(single)[0])
    assert sf.info(decoded / "sub" / "deeper" / "b.wav").frames == 14400


def test_demo_file_folder(tmp_path, corpus: Path) -> None:
    (corpus / "sub" / "broken.wav").unlink()
    out = tmp_path / "out"
    result = run("demoFile.py", "--model", "vctk_sym", "-i", str(corpus), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert tree(out) == ["a.wav", "sub/deeper/b.wav"]
    reference = tmp_path / "a.wav"
    assert run("demoFile.py", "--model", "vctk_sym", "-i", str(corpus / "a.wav"), "-o", str(reference)).returncode == 0
    np.testing.assert_array_equal(sf.read(out / "a.wav")[0], sf.read(reference)[0])
    refused = run("demoFile.py", "--model", "vctk_sym", "-i", str(corpus), "-o", str(out))
    assert refused.returncode == 1 and "-f/--force" in error_lines(refused)[0]
    forced = run("demoFile.py", "--model", "vctk_sym", "-i", str(corpus), "-o", str(out), "-f")
    assert forced.returncode == 0, forced.stderr


def test_plan_keeps_the_tree_and_refuses_ambiguity(tmp_path, corpus: Path) -> None:
    pairs = plan(str(corpus), str(tmp_path / "out"), (".wav", ".flac"), ".adc")
    assert [(str(a.relative_to(corpus)), str(b.relative_to(tmp_path))) for a, b in pairs] == [
        ("a.wav", "out/a.adc"), ("sub/broken.wav", "out/sub/broken.adc"), ("sub/deeper/b.flac", "out/sub/deeper/b.adc")]
    sf.write(corpus / "a.flac", np.zeros(300), RATE)
    with pytest.raises(CodecError, match="would both write"):
        plan(str(corpus), str(tmp_path / "out"), (".wav", ".flac"), ".adc")
    with pytest.raises(CodecError, match="is the input folder"):
        plan(str(corpus), str(corpus), (".wav",), ".wav")
    with pytest.raises(CodecError, match="is a folder but -o"):
        plan(str(corpus), str(corpus / "a.wav"), (".wav",), ".adc")
    with pytest.raises(CodecError, match="no .adc files"):
        plan(str(corpus), str(tmp_path / "x"), (".adc",), ".wav")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CodecError, match="is a file, not a folder: give another output folder"):
        plan(str(corpus), str(tmp_path / "file" / "out"), (".wav",), ".adc")
    with pytest.raises(CodecError, match="does not exist: create it first"):  # one file: checked before the coding
        plan(str(corpus / "a.wav"), str(tmp_path / "nowhere" / "a.adc"), (".wav",), ".adc")
    (corpus / "coded" / "old").mkdir(parents=True)  # -o inside -i, with an earlier run's output in it
    sf.write(corpus / "coded" / "old" / "a.wav", np.zeros(300), RATE)
    inside = plan(str(corpus), str(corpus / "coded"), (".wav",), ".wav")
    assert [str(a.relative_to(corpus)) for a, _ in inside] == ["a.wav", "sub/broken.wav"]
    with pytest.raises(CodecError, match="is the input file: give another output name"):
        plan(str(corpus / "a.wav"), str(corpus / "sub" / ".." / "a.wav"), (".wav",), ".wav")
    if os.path.isdir("/proc/self"):  # a folder that exists but takes no files, even for root
        with pytest.raises(CodecError, match=r"^-o /proc: cannot write files in it \(.+\): give another path$"):
            plan(str(corpus), "/proc", (".wav",), ".adc")


def test_a_folder_run_that_writes_nothing_leaves_no_output_folder(tmp_path, corpus: Path) -> None:
    """-o is made before the coding (a folder that takes no files is one error, not one per file);
    when every file then fails, the folders made for the outputs go again."""
    for path in (corpus / "a.wav", corpus / "sub" / "deeper" / "b.flac"):
        path.unlink()
    out = tmp_path / "new" / "adc"
    result = run("codec.py", "encode", "--model", "vctk_sym", "-i", str(corpus), "-o", str(out))
    assert result.returncode == 1
    assert error_lines(result)[-1] == "error: the one file failed (listed above): nothing was written"
    assert not (tmp_path / "new").exists()
    if os.path.isdir("/proc/self"):
        result = run("demoFile.py", "--model", "vctk_sym", "-i", str(corpus), "-o", "/proc/coded")
        assert result.returncode == 1 and len(error_lines(result)) == 1, result.stderr
        assert error_lines(result)[0].startswith("error: -o /proc/coded: cannot create it (")


def test_names_that_are_no_utf8_are_printed_escaped(tmp_path) -> None:
    """A Latin-1 name from an old archive (`caf\\xe9.wav` under UTF-8) is printed `caf\\xe9` in codec.py's
    log and error lines, as evaluate.py prints it, never as Python's stand-in `caf\\udce9`."""
    audio, _ = sf.read(official_path("input", "test_48k.wav"))
    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    sf.write(os.path.join(folder, b"caf\xe9.wav"), audio[:14400], RATE, "PCM_16")
    with open(os.path.join(folder, b"br\xfbl\xe9.wav"), "wb") as broken:
        broken.write(b"not audio")
    source, packed = (os.fsdecode(os.path.join(folder, b"caf\xe9.wav")),
                      os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.adc")))
    single = run("codec.py", "encode", "--model", "vctk_sym", "-i", source, "-o", packed)
    assert single.returncode == 0, single.stderr
    assert f"wrote {tmp_path}/caf\\xe9.adc: " in single.stderr
    batch = run("codec.py", "encode", "--model", "vctk_sym", "-i", os.fsdecode(folder), "-o", str(tmp_path / "out"))
    assert error_lines(batch)[0].startswith(f"error: cannot read {tmp_path}/in/br\\xfbl\\xe9.wav as audio (")
    assert os.listdir(os.fsencode(tmp_path / "out")) == [b"caf\xe9.adc"]
    for result in (single, batch):
        assert "\\udc" not in result.stderr


def _work_that_fails(at: dict[str, str]):
    """A folder mode's work: writes its output as a coder does (atomically), unless `at` names its input's
    stem: "read" fails before writing, "after" fails after the output is written."""
    from utils.files import write_bytes_atomic

    def work(source: Path, output: Path) -> float:
        if at.get(source.stem) == "read":
            raise CodecError(f"cannot read {source} as audio: give a wav file")
        write_bytes_atomic(output, b"new")
        if at.get(source.stem) == "after":
            raise RuntimeError("failed after writing")
        return 1.0

    return work


def test_a_failed_file_leaves_nothing_and_the_last_line_says_what_was_written(tmp_path) -> None:
    """Files failing at different points: before the output is written (in a folder made for it), or after
    (the output is removed again); an output from an earlier run (-f) is named as left as it was."""
    source, out = tmp_path / "in", tmp_path / "out"
    for name in ("a", "b", "c", "sub/deeper/d"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / f"{name}.wav").write_bytes(b"")
    out.mkdir()
    (out / "c.adc").write_bytes(b"old")
    pairs = plan(str(source), str(out), (".wav",), ".adc")
    with pytest.raises(CodecError) as caught:
        run_batch(pairs, _work_that_fails({"b": "after", "c": "read", "d": "read"}), "encode")
    assert str(caught.value) == (f"3 of 4 files failed (listed above); the others were written; {out / 'c.adc'}, "
                                 "from an earlier run, is left as it was")
    assert tree(out) == ["a.adc", "c.adc"] and (out / "c.adc").read_bytes() == b"old"
    assert sorted(path.name for path in out.iterdir()) == ["a.adc", "c.adc"]  # no folder made for d

    (out / "a.adc").unlink()
    (out / "b.adc").write_bytes(b"old")
    with pytest.raises(CodecError) as caught:
        run_batch(pairs, _work_that_fails({"a": "after", "b": "after", "c": "read", "d": "read"}), "encode")
    assert str(caught.value) == (f"all 4 files failed (listed above): nothing was written; {out / 'c.adc'}, from "
                                 f"an earlier run, is left as it was; {out / 'b.adc'}, from an earlier run, was "
                                 "replaced before its file failed, and is removed")
    assert tree(out) == ["c.adc"]


def _two_inputs_one_name_apart_in_case(tmp_path: Path) -> Path:
    """in/X.wav and in/x.flac (0.1 s each): on a disk that ignores case, both would write out/x.wav."""
    source = tmp_path / "in"
    source.mkdir()
    sf.write(source / "X.wav", np.zeros(4800), RATE)
    sf.write(source / "x.flac", np.zeros(4800), RATE)
    return source


def test_outputs_that_differ_only_in_case_are_refused_where_the_disk_ignores_case(tmp_path, monkeypatch) -> None:
    """X.wav and x.flac write out/X.adc and out/x.adc: two files where the disk tells case apart (Linux's),
    one on macOS's and Windows' disks, where the second replaced the first with exit status 0. The disk is
    probed only where two outputs differ only in case; the probe is stood in for here."""
    import utils.batch

    source, out = _two_inputs_one_name_apart_in_case(tmp_path), tmp_path / "out"
    asked: list[str] = []
    monkeypatch.setattr(utils.batch, "ignores_case", lambda folder: asked.append(folder) or True)
    with pytest.raises(CodecError) as caught:
        plan(str(source), str(out), (".wav", ".flac"), ".adc")
    assert str(caught.value) == (f"{source / 'X.wav'} and {source / 'x.flac'} would both write {out / 'x.adc'} "
                                 f"({out} ignores letter case in names): rename one of them")
    assert asked == [str(out)]
    (source / "x.flac").rename(source / "y.flac")
    assert len(plan(str(source), str(out), (".wav", ".flac"), ".adc")) == 2 and asked == [str(out)]
    monkeypatch.undo()
    if sys.platform == "linux":  # a case-sensitive disk: both are written
        (source / "y.flac").rename(source / "x.flac")
        assert [output.name for _, output in plan(str(source), str(out), (".wav", ".flac"), ".adc")] == [
            "X.adc", "x.adc"]


def test_demo_file_refuses_outputs_one_case_apart_before_the_coding(tmp_path) -> None:
    """The same through demoFile.py's command line, the probe made to answer as macOS's disk would: one
    line, exit status 1, and no output folder left."""
    source, out = _two_inputs_one_name_apart_in_case(tmp_path), tmp_path / "out"
    script = ("import runpy, sys, utils.batch; utils.batch.ignores_case = lambda folder: True; "
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script, os.path.join(REPO, "demoFile.py"), "--model", "vctk_sym",
                             "-i", str(source), "-o", str(out)], cwd=OFFICIAL, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {source / 'X.wav'} and {source / 'x.flac'} would both write {out / 'x.wav'} ({out} ignores letter "
        "case in names): rename one of them"]
    assert not out.exists()


def test_a_batch_never_replaces_a_file_it_wrote(tmp_path, capsys) -> None:
    """Where two output names are one file that the up-front check did not see (a disk that ignores case
    in a way the probe missed, a link), the second input fails and the first output stays. A link stands
    in for the case-folded name; the work writes through the name, as a coder on such a disk reaches the
    earlier file."""
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    for name in ("a", "b", "c"):
        (source / f"{name}.wav").write_bytes(b"")
    os.symlink("a.adc", out / "b.adc")  # out/b.adc will be out/a.adc, once that is written

    def work(source: Path, output: Path) -> float:
        with open(output, "wb") as stream:
            stream.write(source.name.encode())
        return 1.0

    pairs = plan(str(source), str(out), (".wav",), ".adc")
    with pytest.raises(CodecError) as caught:
        run_batch(pairs, work, "encode")
    assert str(caught.value) == "1 of 3 files failed (listed above); the others were written"
    assert error_lines(subprocess.CompletedProcess([], 0, "", capsys.readouterr().err)) == [
        f"error: {source / 'b.wav'}: {out / 'b.adc'} is the file {out / 'a.adc'} that this run wrote (the disk "
        "ignores letter case, or a link joins the names): rename one of the inputs"]
    assert (out / "a.adc").read_bytes() == b"a.wav" and (out / "c.adc").read_bytes() == b"c.wav"
    assert os.readlink(out / "b.adc") == "a.adc"


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    from utils.eval.probe import speech_like_signal

    speech = speech_like_signal(1.5, 16000, seed=3)
    reference, degraded = tmp_path / "ref.wav", tmp_path / "deg.wav"
    sf.write(reference, speech, 16000)
    sf.write(degraded, speech + 0.01 * np.random.default_rng(0).standard_normal(len(speech)), 16000)
    return reference, degraded


def test_evaluate_two_files_with_a_plot(tmp_path, pair: tuple[Path, Path]) -> None:
    reference, degraded = pair
    result = subprocess.run([sys.executable, os.path.join(REPO, "bin", "evaluate.py"), str(reference), str(degraded),
                             "--plot", str(tmp_path / "plots"), "--no-visqol"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("ref.wav "))
    assert 1.0 <= float(row.split()[1]) <= 4.7
    assert (tmp_path / "plots" / "ref.png").stat().st_size > 1000
    mixed = subprocess.run([sys.executable, os.path.join(REPO, "bin", "evaluate.py"), str(reference), str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert mixed.returncode == 1 and "give two files or two folders" in mixed.stderr


def test_spectrogram_axis_in_hz() -> None:
    import librosa

    positions, labels = mel_axis_ticks(48000, 80)
    assert labels == ["100", "250", "500", "1000", "2000", "4000", "8000", "16000"]
    assert positions == sorted(positions) and 0 < positions[0] and positions[-1] < 80
    centers = librosa.mel_frequencies(n_mels=82, fmin=0.0, fmax=24000)[1:-1]
    thousand = positions[labels.index("1000")] - 0.5  # bin centres sit at i + 0.5
    assert centers[int(np.floor(thousand))] <= 1000 <= centers[int(np.ceil(thousand))]
    assert mel_axis_ticks(16000, 80)[1][-1] == "4000"
