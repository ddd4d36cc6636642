#!/usr/bin/env bash
# Train, resume or test the denoising codec (same stages and options as the original's script):
#   stage 0: train from the config's `initial` autoencoder checkpoint on noisy/clean pairs -> ${exp}/${encoder}/
#   stage 1: resume training from step ${resumepoint} ("latest": the newest checkpoint)
#   stage 2: test on noisy speech: ${encoder} at encoder_checkpoint, ${decoder} at decoder_checkpoint
#
# Usage:
#   bash submit_denoise.sh --stage 0
#   bash submit_denoise.sh --stage 2 --encoder_checkpoint 200000 --decoder_checkpoint 500000
#   bash submit_denoise.sh --stage 02 --encoder denoise/demo_48000_hop300 --ngpu 0 \
#       --decoder vocoder/demo_v1_48000_hop300 --encoder_checkpoint 20 --decoder_checkpoint 20   # CPU demo
# With --exp, the config's initial under exp/ is read under that folder (passed as --initial).
set -euo pipefail
declare -r recipe_caller=${PWD}  # relative paths given as options are read from here
cd -- "$(dirname -- "$0")"

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

# What the stages (utils/recipe/train_stages.sh) train and test, once the options are parsed.
recipe_roles() {
    train_tag=${encoder} train_option=encoder test_encoder=${encoder} test_decoder=${decoder}
    train_message="Denoising training" test_message="Denoising testing"
}
. ./utils/recipe/train_stages.sh
