#!/usr/bin/env bash
# Train, resume or test the denoising codec (same stages and options as the original's script):
#   stage 0: train from the config's `initial` autoencoder checkpoint on noisy/clean pairs -> ${exp}/${encoder}/
#   stage 1: resume training from step ${resumepoint} ("latest": the newest checkpoint)
#   stage 2: test on noisy speech: ${encoder} at encoder_checkpoint, ${decoder} at decoder_checkpoint
#
# Usage:
#   bash submit_denoise.sh --stage 0
#   bash submit_denoise.sh --stage 2 --encoder_checkpoint 200000 --decoder_checkpoint 500000
#   bash submit_denoise.sh --stage 02 --encoder denoise/demo_48000_hop300 \
#       --decoder vocoder/demo_v1_48000_hop300 --encoder_checkpoint 20 --decoder_checkpoint 20   # CPU demo
set -euo pipefail
cd "$(dirname "$0")"

encoder=denoise/symAD_vctk_48000_hop300
decoder=vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean
stage=0
resumepoint=200000      # step number, "latest", or a checkpoint path
encoder_checkpoint=200000
decoder_checkpoint=500000
exp=exp                 # experiment root (codecTrain.py --exp_root)
exp_root=""             # same as --exp
output_root=output
disable_cudnn=False
subset=noisy_test
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
config_name="config/${encoder}.yaml"
echo "Configuration file=${config_name}"

if [[ ${stage} == *0* ]]; then
    echo "Denoising training"
    run_stage 0 "${encoder}" run_train -c "${config_name}" --tag "${encoder}" --exp_root "${exp}" --disable_cudnn "${disable_cudnn}"
fi

if [[ ${stage} == *1* ]]; then
    set_resume_args "${resumepoint}" "${exp}/${encoder}"
    echo "Resuming: ${resume_args[*]}"
    run_stage 1 "${encoder}" run_train -c "${config_name}" --tag "${encoder}" --exp_root "${exp}" --disable_cudnn "${disable_cudnn}" \
        "${resume_args[@]}"
fi

if [[ ${stage} == *2* ]]; then
    echo "Denoising testing"
    run_stage 2 "${encoder}" run_python codecTest.py --subset "${subset}" --subset_num "${subset_num}" \
        --encoder "${exp}/${encoder}/checkpoint-${encoder_checkpoint}steps.pkl" \
        --decoder "${exp}/${decoder}/checkpoint-${decoder_checkpoint}steps.pkl" \
        --output_dir "${output_root}/${encoder}"
fi
