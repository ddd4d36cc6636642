"""Judging a codec's output: objective metrics (`metrics`), the Opus reference codec at the same
bitrate (`opus_baseline`) and the synthetic speech-like probe signal (`probe`)."""
