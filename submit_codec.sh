#!/usr/bin/env bash
# The whole codec pipeline, stage by stage (same stages and options as the original's submit_codec_*.sh):
#   stage 0: train the autoencoder (metric losses, then adversarial)   -> ${exp}/${autoencoder}/
#   stage 1: extract code statistics with its encoder                  -> stats/*.npy (named in the config)
#   stage 2: train the vocoder on the frozen encoder's codes           -> ${exp}/${vocoder}/
# Stages 1-4 use the encoder ${exp}/${autoencoder}/checkpoint-${encoder_checkpoint}steps.pkl: where the
# statistic or vocoder config names another analyzer (--exp, --encoder_checkpoint or --autoencoder given),
# stages 1 and 2 pass it with --analyzer.
#   stage 3: test the symmetric codec (autoencoder encoder + decoder)  -> ${output_root}/${autoencoder}/
#   stage 4: test the codec with the vocoder as decoder                -> ${output_root}/${vocoder}/
#
# Usage:
#   bash submit_codec.sh --start 0 --stop 4                    # everything, VCTK 48 kHz recipe
#   bash submit_codec.sh --start 3 --stop 3 --encoder_checkpoint 200000 --decoder_checkpoint 500000
#   bash submit_codec.sh --start 0 --stop 0 --resume latest    # continue from the newest checkpoint
#   bash submit_codec.sh --start 0 --stop 0 --ngpu 4           # DDP on 4 GPUs (torchrun)
#   MASTER_ADDR=node0 bash submit_codec.sh --start 0 --stop 0 --ngpu 8 --nnodes 2   # on every node
#   bash submit_codec.sh --help                                # all options with their defaults
#   bash submit_codec.sh --start 0 --stop 4 --cmd slurm --partition gpu --ngpu 8 --precision bf16   # SLURM, utils/recipe/launcher.sh
# Stage 3 tests the autoencoder's encoder at step encoder_checkpoint and its decoder at step
# encoder_checkpoint + decoder_checkpoint; stage 4 tests the vocoder at step decoder_checkpoint.
# A stage range that holds none of the stages 0-4, or a reversed one, stops with one line. Stage 0 or 2 run again continue from
# the experiment's newest checkpoint (--resume auto) unless --resume says otherwise. The stages run
# PYTHON when set, else .venv/bin/python (./test.sh makes it), else python3.
set -euo pipefail
declare -r recipe_caller=${PWD}  # relative paths given as options are read from here
cd -- "$(dirname -- "$0")"

autoencoder=autoencoder/symAD_vctk_48000_hop300
statistic=statistic/symAD_vctk_48000_hop300_clean
vocoder=vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean

start=-1                # first stage to run (-1, as the original: from the first)
stop=100                # last stage to run (100, as the original: to the last)
encoder_checkpoint=200000
decoder_checkpoint=500000
exp=exp                 # experiment root (codecTrain.py --exp_root)
exp_root=""             # same as --exp
output_root=output      # where the test stages write audio
disable_cudnn=False
statistic_subset=train
test_subset=test
subset_num=-1           # number of files for statistics and tests; -1 = all
resume=""               # training stages: "" (= latest), latest, a step number, or a checkpoint path
seed=""                 # training seed; "" keeps codecTrain.py's default
ngpu=1                  # GPUs per node, one training process each (torchrun when > 1); 0: train on CPUs
nnodes=1                # nodes; > 1 needs MASTER_ADDR (and MASTER_PORT) of the rendezvous host

. ./utils/recipe/setup.sh   # options (utils/recipe/launcher.sh, parse_options.sh), helpers
if [ "${start}" -gt 4 ]; then
    echo "$0: --start ${start} is past the last stage: the stages are 0 to 4" >&2
    exit 1
fi
if [ "${stop}" -lt 0 ]; then
    echo "$0: --stop ${stop} is before the first stage: the stages are 0 to 4" >&2
    exit 1
fi
if [ "${start}" -gt "${stop}" ]; then
    echo "$0: --start ${start} is after --stop ${stop}: no stage would run (give --start <= --stop)" >&2
    exit 1
fi
# Every config a stage in range reads, before the first stage runs or is submitted.
[ "${start}" -gt 0 ] || recipe_config "config/${autoencoder}.yaml" autoencoder
[ "${start}" -gt 1 ] || [ "${stop}" -lt 1 ] || recipe_config "config/${statistic}.yaml" statistic
[ "${start}" -gt 2 ] || [ "${stop}" -lt 2 ] || recipe_config "config/${vocoder}.yaml" vocoder

encoder_path=${exp}/${autoencoder}/checkpoint-${encoder_checkpoint}steps.pkl
# analyzer_args <config>: --analyzer <the encoder> where the config's analyzer is another checkpoint.
analyzer_args() {
    analyzer_override=()
    [ "$(recipe_config_value "$1" analyzer)" = "${encoder_path}" ] || analyzer_override=(--analyzer "${encoder_path}")
}

if [ "${start}" -le 0 ] && [ "${stop}" -ge 0 ]; then
    echo "Stage 0: autoencoder training (config/${autoencoder}.yaml)"
    set_resume_args "${resume}" "${exp}/${autoencoder}"
    run_stage 0 "${autoencoder}" run_train -c "config/${autoencoder}.yaml" --tag "${autoencoder}" --exp_root "${exp}" \
        --disable_cudnn "${disable_cudnn}" ${resume_args[@]+"${resume_args[@]}"}
fi

if [ "${start}" -le 1 ] && [ "${stop}" -ge 1 ]; then
    echo "Stage 1: statistics extraction (config/${statistic}.yaml) with the encoder ${encoder_path}"
    analyzer_args "config/${statistic}.yaml"
    run_stage 1 "${statistic}" run_python codecStatistic.py -c "config/${statistic}.yaml" --subset "${statistic_subset}" \
        --subset_num "${subset_num}" ${analyzer_override[@]+"${analyzer_override[@]}"}
fi

if [ "${start}" -le 2 ] && [ "${stop}" -ge 2 ]; then
    echo "Stage 2: vocoder training (config/${vocoder}.yaml) on the codes of the encoder ${encoder_path}"
    set_resume_args "${resume}" "${exp}/${vocoder}"
    analyzer_args "config/${vocoder}.yaml"
    run_stage 2 "${vocoder}" run_train -c "config/${vocoder}.yaml" --tag "${vocoder}" --exp_root "${exp}" \
        --disable_cudnn "${disable_cudnn}" ${analyzer_override[@]+"${analyzer_override[@]}"} \
        ${resume_args[@]+"${resume_args[@]}"}
fi

if [ "${start}" -le 3 ] && [ "${stop}" -ge 3 ]; then
    echo "Stage 3: testing the symmetric codec"
    run_stage 3 "${autoencoder}" run_python codecTest.py --subset "${test_subset}" --subset_num "${subset_num}" \
        --encoder "${encoder_path}" \
        --decoder "${exp}/${autoencoder}/checkpoint-$((encoder_checkpoint + decoder_checkpoint))steps.pkl" \
        --output_dir "${output_root}/${autoencoder}"
fi

if [ "${start}" -le 4 ] && [ "${stop}" -ge 4 ]; then
    echo "Stage 4: testing the codec with the vocoder"
    run_stage 4 "${vocoder}" run_python codecTest.py --subset "${test_subset}" --subset_num "${subset_num}" \
        --encoder "${encoder_path}" \
        --decoder "${exp}/${vocoder}/checkpoint-${decoder_checkpoint}steps.pkl" \
        --output_dir "${output_root}/${vocoder}"
fi
