"""The root of streamd's own exceptions, so a caller can catch "anything streamd
refused" in one clause and never confuse it with a library's error.

Each error lives in the module that raises it and keeps its builtin base, so
existing ``except ValueError`` / ``except RuntimeError`` clauses still match::

    StreamdError
     ├── ConfigError (ValueError)         config: names file, key and problem
     ├── SecretError (ValueError)         credentials: names the path, never the value
     ├── ControlSocketError (ValueError)  transport.local: a bad supervisor ↔ child message
     ├── FrameError (ValueError)          transport.frame: an untrusted payload refused
     ├── ClientMessageError (ValueError)  gateway.protocol: a viewer's /ws message refused
     ├── EncodeError (RuntimeError)       worker.encode: OpenCV refused a frame
     └── DetectorError (RuntimeError)     worker.detectors: a detector could not be built

A leaf module: it imports nothing from streamd, so any module can use it.
"""

from __future__ import annotations


class StreamdError(Exception):
    """Something streamd itself detected and refused (not a library's failure)."""
