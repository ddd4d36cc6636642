#!/usr/bin/env bash
# The main job: code a bundled speech clip with the streaming codec (wav -> codes -> wav).
# Creates .venv if missing and installs the pinned requirements first.
#   ./run.sh                 # default model, output in output/
#   MODEL=vctk_sym ./run.sh  # another registered model
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -r requirements.txt
mkdir -p output
# Until a model trained on real speech ships in exp/, the demo runs an official-format model
# bundled with the tests (random weights: the codec runs end to end, but it does not sound good).
MODEL=${MODEL:-vctk_v1}
ROOT=${ROOT:-tests/data/official}
INPUT=${INPUT:-tests/data/official/input/test_48k.wav}
.venv/bin/python demoFile.py --model "$MODEL" --root "$ROOT" -i "$INPUT" -o "output/${MODEL}.wav" --cuda -1 --num_threads 2
echo "decoded audio: output/${MODEL}.wav"
