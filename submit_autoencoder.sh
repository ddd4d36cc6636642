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
declare -r recipe_caller=${PWD}  # relative paths given as options are read from here
cd -- "$(dirname -- "$0")"

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

# What the stages (utils/recipe/train_stages.sh) train and test, once the options are parsed.
recipe_roles() {
    train_tag=${tag_name} train_option=tag_name test_encoder=${tag_name} test_decoder=${tag_name}
}
. ./utils/recipe/train_stages.sh
