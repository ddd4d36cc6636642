#!/usr/bin/env bash
# submit_codec.sh with the CPU demo recipes on corpus/ (minutes on 2 cores) as defaults, on CPUs
# (--ngpu 0; give --ngpu 1 to train them on a GPU).
# Every submit_codec.sh option still applies, e.g.: bash submit_codec_demo.sh --start 0 --stop 4
set -euo pipefail
exec bash -- "$(dirname -- "$0")/submit_codec.sh" \
    --autoencoder autoencoder/demo_48000_hop300 \
    --statistic statistic/demo_48000_hop300 \
    --vocoder vocoder/demo_v1_48000_hop300 \
    --encoder_checkpoint 10 --decoder_checkpoint 10 --ngpu 0 "$@"
