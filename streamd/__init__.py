"""streamd: a camera-streaming daemon (supervisor, per-camera children, gateway)."""

__version__ = "0.1.0"
