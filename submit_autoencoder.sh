#!/usr/bin/env bash
# Train, resume or test one autoencoder recipe (same stages and options as the original's script):
#   stage 0: train from scratch                       -> ${exp}/${tag_name}/
#   stage 1: resume training from step ${resumepoint} ("latest": the newest checkpoint)
#   stage 2: test: encoder at encoder_checkpoint, decoder at decoder_checkpoint -> ${output_root}/${tag_name}/
# Stages combine: --stage 02 trains then tests.
#
# Usage:
#   bash submit_autoencoder.sh --stage 0 --tag_name autoencoder/symAD_libritts_24000_hop300
#   bash submit_autoencoder.sh --stage 1 --resumepoint latest
#   bash submit_autoencoder.sh --stage 2 --encoder_checkpoint 200000 --decoder_checkpoint 700000
#   bash submit_autoencoder.sh --stage 0 --ngpu 4     # DDP on 4 GPUs (torchrun); --nnodes M with MASTER_ADDR
# Recipes: autoencoder/symAD_vctk_48000_hop300 (checkpoints 200000 / 700000), symADuniv_vctk_48000_hop300,
# symAD_libritts_24000_hop300, symAD_c16_vctk_48000_hop320 (500000 / 1000000), symAAD_vctk_48000_hop300,
# demo_48000_hop300 (CPU demo: 10 / 20).
set -euo pipefail
cd "$(dirname "$0")"

tag_name=autoencoder/symAD_vctk_48000_hop300
stage=0
resumepoint=200000      # step number, "latest", or a checkpoint path
encoder_checkpoint=200000
decoder_checkpoint=700000
exp=exp                 # experiment root (codecTrain.py --exp_root)
exp_root=""             # same as --exp
output_root=output
disable_cudnn=False
subset=test
subset_num=-1
seed=""                 # training seed; "" keeps codecTrain.py's default
ngpu=1                  # GPUs per node, one training process each (torchrun when > 1); 0: train on CPUs
nnodes=1

. ./utils/launcher.sh   # --cmd local|slurm, SLURM resources, --dry-run (see the file)
. ./parse_options.sh
. ./submit_common.sh
launcher_init
if [ -n "${exp_root}" ]; then
    exp=${exp_root}
fi
config_name="config/${tag_name}.yaml"
echo "Configuration file=${config_name}"

if [[ ${stage} == *0* ]]; then
    echo "Training from scratch"
    run_stage 0 "${tag_name}" run_train -c "${config_name}" --tag "${tag_name}" --exp_root "${exp}" --disable_cudnn "${disable_cudnn}"
fi

if [[ ${stage} == *1* ]]; then
    set_resume_args "${resumepoint}" "${exp}/${tag_name}"
    echo "Resuming: ${resume_args[*]}"
    run_stage 1 "${tag_name}" run_train -c "${config_name}" --tag "${tag_name}" --exp_root "${exp}" --disable_cudnn "${disable_cudnn}" \
        "${resume_args[@]}"
fi

if [[ ${stage} == *2* ]]; then
    echo "Testing"
    run_stage 2 "${tag_name}" run_python codecTest.py --subset "${subset}" --subset_num "${subset_num}" \
        --encoder "${exp}/${tag_name}/checkpoint-${encoder_checkpoint}steps.pkl" \
        --decoder "${exp}/${tag_name}/checkpoint-${decoder_checkpoint}steps.pkl" \
        --output_dir "${output_root}/${tag_name}"
fi
