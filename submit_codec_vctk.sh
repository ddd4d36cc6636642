#!/usr/bin/env bash
# submit_codec.sh with the VCTK 48 kHz recipes (v1 vocoder) as defaults.
# Every submit_codec.sh option still applies, e.g.: bash submit_codec_vctk.sh --start 0 --stop 4
set -euo pipefail
exec bash -- "$(dirname -- "$0")/submit_codec.sh" \
    --autoencoder autoencoder/symAD_vctk_48000_hop300 \
    --statistic statistic/symAD_vctk_48000_hop300_clean \
    --vocoder vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean \
    --encoder_checkpoint 200000 --decoder_checkpoint 500000 "$@"
