#!/usr/bin/env bash
# Extract the code statistics (mean and scale of the quantized codes over a subset) that normalize
# a vocoder's input. The config names the encoder checkpoint (analyzer) and the output .npy (stats).
#
# Usage:
#   bash submit_statistic.sh
#   bash submit_statistic.sh --tag_name statistic/symAD_libritts_24000_hop300_clean
#   bash submit_statistic.sh --tag_name statistic/demo_48000_hop300 --subset_num 10
# Recipes: statistic/symAD_vctk_48000_hop300_clean, symADuniv_vctk_48000_hop300_clean,
# symAD_libritts_24000_hop300_clean, demo_48000_hop300.
set -euo pipefail
declare -r recipe_caller=${PWD}  # relative paths given as options are read from here
cd -- "$(dirname -- "$0")"

tag_name=statistic/symAD_vctk_48000_hop300_clean
subset=train
subset_num=-1           # number of files; -1 = all

. ./utils/recipe/setup.sh   # options (utils/recipe/launcher.sh, parse_options.sh), helpers

config_name="config/${tag_name}.yaml"
recipe_config "${config_name}" tag_name
echo "Configuration file=${config_name}"
run_stage 0 "${tag_name}" run_python codecStatistic.py -c "${config_name}" --subset "${subset}" --subset_num "${subset_num}"
