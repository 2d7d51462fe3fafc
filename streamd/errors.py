"""The root of streamd's own exceptions, so a caller can catch "anything streamd
refused" in one clause and never confuse it with a library's error.

Each error lives in the module that raises it (``CliError``, raised by both
``cli`` and ``install``, lives here) and keeps its builtin base, so existing
``except ValueError`` / ``except RuntimeError`` clauses still match::

    StreamdError
     ├── ConfigError (ValueError)         config: names file, key and problem
     ├── SecretError (ValueError)         credentials: names the path, never the value
     ├── ControlSocketError (ValueError)  transport.local: a bad supervisor ↔ child message
     ├── FrameError (ValueError)          transport.frame: an untrusted payload refused
     ├── ClientMessageError (ValueError)  gateway.protocol: a viewer's /ws message refused
     ├── QueryError (ValueError)          eventlog.records: an events query refused
     ├── EncodeError (RuntimeError)       worker.encode: OpenCV refused a frame
     ├── DetectorError (RuntimeError)     worker.detectors: a detector could not be built
     ├── SourceError (RuntimeError)       worker.frames: a camera source cannot be opened
     ├── BadEventError (ValueError)       gateway.live_events: an untrusted live event refused
     ├── AnnexBError (ValueError)         video.annexb: not a well-formed Annex-B stream
     ├── SeiError (ValueError)            video.sei: not our metadata SEI
     ├── BitstreamError (ValueError)      video.bits: a bit-level read past the end or too long
     │    └── SpsError                    video.sps: an SPS we cannot parse or rewrite
     ├── DemuxError                       video.demux: a passthrough source cannot be read
     │    └── UnsupportedSource (ValueError)  video.demux: no H.264/H.265 video (not retried)
     ├── ForkMessageError (ValueError)    forkserver.protocol: a bad supervisor ↔ fork server packet
     ├── ForkServerUnavailable (RuntimeError)  forkserver.client: no fork now (the child is exec'd)
     ├── ForkInterrupted (OSError)        forkserver.client: the fork server died mid-request
     └── CliError                         here: a command refused, with its exit code

Not under it, on purpose: errors that stand in for a library's own, so the
library's handling catches them (``RespProtocolError``, ``TopologyError``,
``SlotMovedError`` are ``redis.RedisError``), and private control flow
(``_SourceLost``). ``tests/test_errors.py`` finds every class by walking the package.

A leaf module: it imports nothing from streamd, so any module can use it.
"""

from __future__ import annotations


class StreamdError(Exception):
    """Something streamd itself detected and refused (not a library's failure)."""


class CliError(StreamdError):
    """A command refused; ``main`` prints the message and exits with ``code``
    (an ``ExitCode``; a plain int keeps this module a leaf)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
