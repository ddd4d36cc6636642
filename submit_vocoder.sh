#!/usr/bin/env bash
# Train, resume or test one vocoder recipe (same stages and options as the original's script):
#   stage 0: train from scratch on the codes of the config's analyzer    -> ${exp}/${tag_name}/
#   stage 1: resume training from step ${resumepoint} ("latest": the newest checkpoint)
#   stage 2: test: ${autoencoder}'s encoder at encoder_checkpoint, this vocoder at decoder_checkpoint
# The vocoder reads the code statistics its config names: run submit_statistic.sh first.
#
# Usage:
#   bash submit_vocoder.sh --stage 0 --tag_name vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean
#   bash submit_vocoder.sh --stage 1 --resumepoint latest
#   bash submit_vocoder.sh --stage 2 --encoder_checkpoint 200000 --decoder_checkpoint 500000
# Recipes: vocoder/AudioDec_v{0,1,2}_symAD_vctk_48000_hop300_clean (encoder 200000),
# AudioDec_v3_symADuniv_vctk_48000_hop300_clean and AudioDec_v1_symAD_libritts_24000_hop300_clean
# (encoder 500000, with the matching --autoencoder), demo_v1_48000_hop300 (CPU demo, encoder 10).
set -euo pipefail
cd "$(dirname "$0")"

autoencoder=autoencoder/symAD_vctk_48000_hop300
tag_name=vocoder/AudioDec_v0_symAD_vctk_48000_hop300_clean
stage=0
resumepoint=200000      # step number, "latest", or a checkpoint path
encoder_checkpoint=200000
decoder_checkpoint=500000
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
        --encoder "${exp}/${autoencoder}/checkpoint-${encoder_checkpoint}steps.pkl" \
        --decoder "${exp}/${tag_name}/checkpoint-${decoder_checkpoint}steps.pkl" \
        --output_dir "${output_root}/${tag_name}"
fi
