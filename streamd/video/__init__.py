"""H.264/H.265 passthrough building blocks (issue 20), all sans-I/O.

- ``annexb``: split/join Annex-B NAL units, NAL types, keyframes, parameter
  sets, avcC/hvcC extradata.
- ``sei``: streamd's metadata in a ``user_data_unregistered`` SEI NAL.
- ``sps``: H.264 SPS parse/serialize and the no-reorder-delay rewrite.
- ``units``: the verdict on untrusted bytes read from Redis.
- ``gop``: per-camera GOP cache and per-viewer latest-wins-at-GOP queue.

None of it is served yet; see docs/protocol.md (passthrough, draft).
"""
