#!/usr/bin/env bash
# The main job: code a speech clip with the shipped demo48k codec into a compressed .adc file,
# decode it, and score the result (beside Opus at the same bitrate when opus-tools is installed).
# Creates .venv if missing and installs the pinned requirements first.
#   ./run.sh                                   # bundled clip (data/demo), model demo48k -> output/
#   INPUT=my.wav ./run.sh                      # your own file (resampled to 48 kHz if needed)
#   MODEL=vctk_sym ROOT=/path/to/AudioDec ./run.sh   # another registered model and its exp/ folder
#   OUTPUT=/tmp/coded ./run.sh                 # outputs elsewhere (a read-only clone of the toolkit)
# INPUT, ROOT and OUTPUT are read from the caller's folder; the outputs go to $OUTPUT/$MODEL/, by
# default output/$MODEL/ of the toolkit, and are replaced on every run.
set -euo pipefail
if [ -n "${INPUT:-}" ] && [[ ${INPUT} != /* ]]; then INPUT=$PWD/$INPUT; fi
if [ -n "${ROOT:-}" ] && [[ ${ROOT} != /* ]]; then ROOT=$PWD/$ROOT; fi
if [ -n "${OUTPUT:-}" ] && [[ ${OUTPUT} != /* ]]; then OUTPUT=$PWD/$OUTPUT; fi
cd -- "$(dirname -- "$0")"
MODEL=${MODEL:-demo48k}
INPUT=${INPUT:-data/demo/alsa_speakers.wav}
OUTPUT=${OUTPUT:-output}
if [ ! -f "$INPUT" ]; then
    echo "error: INPUT=$INPUT is not a file: give an audio file (read from the folder run.sh is called from)" >&2
    exit 1
fi
file=$(basename -- "$INPUT")
name=${file%.*}
name=${name:-$file}  # .wav: a name that is all extension
out=$OUTPUT/$MODEL
# A run that fails leaves no folder it made (MODEL=bogus: no output/bogus/): the topmost of $out's
# folders that does not exist yet.
made=""
case "/$out/" in
    */../*)  # the clean-up below walks $out's folders by name, which '..' would send elsewhere
        echo "error: OUTPUT=$OUTPUT has '..' in it: give the folder's path without it" >&2
        exit 1 ;;
esac
folder=$out
while [ ! -e "$folder" ] && [ ! -L "$folder" ]; do
    made=$folder
    folder=$(dirname -- "$folder")
done
# A run that stops before its last line failed, whatever $? says: bash 3.2 gives an EXIT trap
# $? = 0 after a set -u error, and would exit 0 with it.
finished=false
on_exit() {
    local status=$?
    [ "$finished" = false ] || return 0
    if [ -n "$made" ]; then rm -rf -- "$made"; fi
    exit $((status == 0 ? 1 : status))
}
trap on_exit EXIT
# Before the set-up: a read-only clone is named in one line, with the way out, not mkdir's message.
if ! reason=$(mkdir -p -- "$out" 2>&1); then
    echo "error: cannot create $out (${reason##*: }): give OUTPUT=a folder you may write in" >&2
    exit 1
fi
for written in "$out/$name.adc" "$out/$name.entropy.adc" "$out/$name.wav" "$out/scores.json"; do
    if [ "$INPUT" -ef "$written" ]; then  # -f would replace the input with its own decoding
        echo "error: INPUT=$INPUT is one of the files run.sh writes ($written): give an input outside $out," \
             "or another OUTPUT" >&2
        exit 1
    fi
done
bash utils/setup_venv.sh  # .venv and the pinned requirements (torch's CPU build where no NVIDIA driver)
PY=.venv/bin/python
# Whole-array expansions are written ${a[@]+"${a[@]}"}: bash before 4.4 (macOS's /bin/bash is 3.2)
# stops on an empty array's "${a[@]}" under set -u (tests/test_shell_portability.py).
CODEC_ARGS=(--cuda -1 --num_threads 2 -f)  # -f: $out is this script's own, rewritten on every run
if [ -n "${ROOT:-}" ]; then CODEC_ARGS+=(--root "$ROOT"); fi

echo "== encode (raw codes: 1.6 kbps per codebook)"
$PY codec.py encode --model "$MODEL" ${CODEC_ARGS[@]+"${CODEC_ARGS[@]}"} --resample -i "$INPUT" -o "$out/$name.adc"
decode_from=$out/$name.adc
if $PY codec.py encode --model "$MODEL" ${CODEC_ARGS[@]+"${CODEC_ARGS[@]}"} --resample --entropy \
        -i "$INPUT" -o "$out/$name.entropy.adc" 2>/dev/null; then
    echo "== encode --entropy (same codes, range-coded with the model's table)"
    decode_from=$out/$name.entropy.adc
else
    echo "== (model $MODEL has no entropy table: skipping --entropy)"
fi
$PY codec.py info "$out/$name.adc"
$PY codec.py info "$decode_from"

echo "== decode $decode_from -> $out/$name.wav"
$PY codec.py decode ${CODEC_ARGS[@]+"${CODEC_ARGS[@]}"} -i "$decode_from" -o "$out/$name.wav"

echo "== scores against the input"
OPUS=()
if command -v opusenc >/dev/null && command -v opusdec >/dev/null; then OPUS=(--opus); fi
# This run's pair only: the input against its decoding.
$PY bin/evaluate.py "$INPUT" "$out/$name.wav" ${OPUS[@]+"${OPUS[@]}"} --no-visqol --json "$out/scores.json"
echo "decoded audio: $out/$name.wav"
finished=true
