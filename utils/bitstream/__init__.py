"""Codes as bytes. Pure bytes and numpy, except `codec_file`, which joins a codec to its files.

- `bits`: the one N-bit code packer and bits-per-code rule, shared by both formats below.
- `adc`: the `.adc` compressed-audio container (header, packed codes, CRC32; docs/bitstream.md).
- `entropy`: the optional range coder of `.adc` payloads and its per-codebook tables.
- `codec_file`: audio -> `.adc` file -> audio through a `StreamingCodec`.
- `packet`: the UDP packets of the live codec link (utils/live/udp.py).
"""
