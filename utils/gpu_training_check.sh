#!/usr/bin/env bash
# The GPU figures of docs/training.md in one run of a few minutes: steps/s and peak memory of the full
# symAD_vctk_48000_hop300 recipe, 200 stage-1 steps and 50 adversarial steps per setting (fp32,
# bf16, bf16 + torch.compile), from bin/train_benchmark.py (the trainer's own step on random audio).
#
#   bash utils/gpu_training_check.sh                 # writes gpu_check/*.json and gpu_check/summary.txt
#   OUT=/some/dir bash utils/gpu_training_check.sh   # writes there instead
#
# Variables (defaults in brackets): DEVICE [cuda], CONFIG [the full recipe], STAGE1_STEPS [200],
# ADVERSARIAL_STEPS [50], WARMUP [3], SETTINGS ["fp32 bf16 bf16+compile"], PYTHON [.venv/bin/python
# where it exists, else python3],
# RUN_TIMEOUT [270: seconds one phase of one setting may take, compilation included].
# A setting that fails or runs out of time is marked FAILED in the summary (its messages in
# OUT/PHASE_SETTING.log) and the others still run; the exit status is then 1.
# Where one command may run 10 minutes, split it: SETTINGS="fp32 bf16" first (eager, a few
# minutes), then SETTINGS=bf16+compile (compilation takes minutes per phase), each into its own OUT.
#
# On a machine whose Python has torch but not this project's audio packages, carry them as wheels
# (Python 3.12, manylinux), downloaded where pip can reach the index:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl librosa==0.11.0 soundfile==0.14.0 soxr==1.1.0 cffi audioread pooch decorator platformdirs
# and there: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#            && PYTHONPATH=/tmp/site bash utils/gpu_training_check.sh
# These are what the lent GPU machines' image lacks; librosa needs numba, llvmlite, scipy,
# lazy_loader, joblib and msgpack too, which that image has (a bare Python needs them as well, about
# 100 MB of wheels). The check below imports what the first step does, librosa's filters included.
set -euo pipefail
cd -- "$(dirname -- "$0")/.."
case "${1-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    ?*) echo "gpu_training_check: it takes no arguments but -h (settings are variables: see --help)" >&2; exit 2 ;;
esac
default_python=python3
[ -x .venv/bin/python ] && default_python=.venv/bin/python

device=${DEVICE:-cuda}
config=${CONFIG:-config/autoencoder/symAD_vctk_48000_hop300.yaml}
stage1_steps=${STAGE1_STEPS:-200}
adversarial_steps=${ADVERSARIAL_STEPS:-50}
warmup=${WARMUP:-3}
settings=${SETTINGS:-fp32 bf16 bf16+compile}
python=${PYTHON:-${default_python}}
run_timeout=${RUN_TIMEOUT:-270}
out=${OUT:-gpu_check}

# Every setting is checked before the first one runs: a typo must not cost the minutes of the others.
for setting in ${settings}; do
    case "${setting}" in
        fp32 | bf16 | fp16 | fp32+compile | bf16+compile | fp16+compile) ;;
        *) echo "gpu_training_check: setting '${setting}' is not PRECISION or PRECISION+compile" >&2; exit 2 ;;
    esac
done

# One Python start (seconds each) checks the interpreter: torch, a CUDA device, and everything the
# benchmark imports, before any timing: a missing package costs seconds, not a run (librosa loads its
# submodules lazily: its filters, which need numba, only when the mel loss is built).
probe='import sys
try:
    import torch
except ImportError:
    sys.exit(3)
if sys.argv[1] != "cpu" and not torch.cuda.is_available():
    sys.exit(4)
try:
    import librosa.filters
    import trainer.benchmark
    from utils.cli import check_torch_version
    check_torch_version()
except Exception as error:
    print(error)
    sys.exit(5)
print("torch", torch.__version__, "CUDA", torch.version.cuda)'
status=0
machine=$("${python}" -c "${probe}" "${device}" 2>&1) || status=$?
case "${status}" in
    0) ;;
    4) echo "gpu_training_check: ${python} sees no CUDA device: run it on a GPU machine (or DEVICE=cpu to try it)" >&2
       exit 2 ;;
    5) echo "gpu_training_check: ${python} cannot run the trainer: ${machine##*$'\n'} (carry the packages as above)" >&2
       exit 2 ;;
    *) echo "gpu_training_check: ${python} cannot import torch: give a Python that has it (PYTHON=...)" >&2
       exit 2 ;;
esac
mkdir -p "${out}"
: > "${out}/summary.txt"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    echo "${machine##*$'\n'}"
} | tee "${out}/machine.txt"

failed=0
for setting in ${settings}; do
    precision=${setting%%+*}
    compile=off
    [ "${setting}" != "${precision}" ] && compile=on
    for phase in stage1 adversarial; do
        steps=${stage1_steps}
        [ "${phase}" = adversarial ] && steps=${adversarial_steps}
        name=${phase}_${setting/+/_}
        rm -f "${out}/${name}.json"  # an earlier run's figures must not stand beside this run's failure
        echo "== ${phase}, ${setting}, ${steps} steps after ${warmup}" | tee -a "${out}/summary.txt"
        if PYTHONUNBUFFERED=1 timeout "${run_timeout}" "${python}" bin/train_benchmark.py -c "${config}" \
            --device "${device}" --phases "${phase}" --precisions "${precision}" --compile "${compile}" \
            --steps "${steps}" --warmup "${warmup}" --json "${out}/${name}.json" > "${out}/${name}.log" 2>&1; then
            tee -a "${out}/summary.txt" < "${out}/${name}.log"
        else
            status=$?
            reason="exit status ${status}"
            [ "${status}" = 124 ] && reason="more than ${run_timeout} s"
            echo "FAILED (${reason}): ${out}/${name}.log ends with:" | tee -a "${out}/summary.txt"
            tail -n 5 "${out}/${name}.log" | tee -a "${out}/summary.txt"
            failed=1
        fi
    done
done
exit "${failed}"
