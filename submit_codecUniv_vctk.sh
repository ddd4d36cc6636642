#!/usr/bin/env bash
# submit_codec.sh with the VCTK 48 kHz UnivNet-discriminator recipes (v3 vocoder) as defaults.
# Every submit_codec.sh option still applies, e.g.: bash submit_codecUniv_vctk.sh --start 0 --stop 4
set -euo pipefail
exec bash -- "$(dirname -- "$0")/submit_codec.sh" \
    --autoencoder autoencoder/symADuniv_vctk_48000_hop300 \
    --statistic statistic/symADuniv_vctk_48000_hop300_clean \
    --vocoder vocoder/AudioDec_v3_symADuniv_vctk_48000_hop300_clean \
    --encoder_checkpoint 500000 --decoder_checkpoint 500000 "$@"
