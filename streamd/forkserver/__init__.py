"""The warm fork server: one process that imports what a camera child needs once,
freezes it (``gc.freeze``) and forks camera children on request, so a hundred
cameras share one copy of numpy, OpenCV, PyAV and redis-py (copy-on-write).

- ``protocol``: the messages between supervisor and fork server (pure).
- ``server``: the fork server process (``python -m streamd.forkserver``).
- ``entry``: what a freshly forked child does before it is a camera worker.
- ``client``: the supervisor's side: start, ask for children, watch, restart.
- ``process``: a forked child as the supervisor sees it (pidfd, exit code).
"""
