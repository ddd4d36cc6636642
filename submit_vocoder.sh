#!/usr/bin/env bash
# Train, resume or test one vocoder recipe (same stages and options as the original's script):
#   stage 0: train from scratch on the codes of the config's analyzer    -> ${exp}/${tag_name}/
#   stage 1: resume training from step ${resumepoint} ("latest": the newest checkpoint)
#   stage 2: test: ${autoencoder}'s encoder at encoder_checkpoint, this vocoder at decoder_checkpoint
#            (it stops with one line where that is not the vocoder's analyzer: give the matching
#            --autoencoder and --encoder_checkpoint)
# With --exp, the config's analyzer under exp/ is read under that folder (passed as --analyzer).
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
declare -r recipe_caller=${PWD}  # relative paths given as options are read from here
cd -- "$(dirname -- "$0")"

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

# What the stages (utils/recipe/train_stages.sh) train and test, once the options are parsed.
recipe_roles() {
    train_tag=${tag_name} train_option=tag_name test_encoder=${autoencoder} test_decoder=${tag_name}
    test_analyzer=true
}
. ./utils/recipe/train_stages.sh
