"""The child's passthrough pipeline (issue 20), sans-I/O: demuxed access units
in, the messages for ``au:{camera_id}`` out (format: docs/protocol.md).

For each unit, in decode order:

- parameter sets are learnt from the stream (in-band, or put in-band by
  ``demux``) and every keyframe carries the newest ones
  (``annexb.with_parameter_sets``), so every keyframe is a starting point;
- H.264: the SPS is rewritten for no reorder delay when
  ``reorder.reorder_decision`` says so; undecided main/high streams are observed
  for a GOP (PTS order against decode order) first and keep their SPS meanwhile;
- our metadata SEI goes right before the first slice.

Nothing is published that a decoder could not use: units before the first
keyframe, a keyframe without its parameter sets, and, after a unit that had to
be dropped, everything until the next keyframe. ``seq`` counts published
units only, so a gap in it always means a loss after the child.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .annexb import (
    AUD_TYPE,
    H264_SPS,
    PARAMETER_SET_TYPES,
    START_CODE,
    AnnexBError,
    Codec,
    ParameterSets,
    header_size,
    is_keyframe_nal,
    is_vcl,
    join_nals,
    nal_type,
)
from .demux import MAX_UNIT_BYTES, AccessUnit
from .reorder import Reorder, pts_reordered, reorder_decision, rewrite_nal
from .sei import UnitMeta, metadata_nal
from .sps import SpsError, parse_nal
from .units import MAX_NALS

# The SEI and parameter sets we add are < 1 KiB; a unit demux let through
# stays under what a gateway configured with MAX_UNIT_BYTES accepts.
MAX_MESSAGE_BYTES = MAX_UNIT_BYTES + 4096
# Observation of PTS order stops after this many units without a keyframe (a
# camera with a 10-minute GOP still gets decided, on what was seen).
MAX_OBSERVED = 600
# Decisions under which PTS order is still watched (a rewrite is undone by
# one reordered GOP).
_WATCHED = frozenset({Reorder.UNDECIDED, Reorder.REWRITE})


def split_head(data: bytes, codec: Codec) -> tuple[list[bytes], int]:
    """The NAL units before the first slice, and where that slice's NAL unit
    begins (after its start code): the rest is left untouched.

    Only the head is looked at: parameter sets, delimiters and SEI come
    before the first slice, and splitting the slices too would scan every
    byte of the picture (most of the pipeline's cost at 1080p). The gateway
    (``units.check_unit``) still reads every NAL unit of what it forwards.
    """
    first = data.find(b"\x00\x00\x01")
    if first < 0 or data[:first].strip(b"\x00"):
        raise AnnexBError("no start code")
    head: list[bytes] = []
    start = first + 3
    while len(head) < MAX_NALS:
        if len(data) - start < header_size(codec):
            raise AnnexBError("access unit without a slice")
        if is_vcl(nal_type(data[start : start + 2], codec), codec):
            return head, start
        nxt = data.find(b"\x00\x00\x01", start)
        if nxt < 0:
            raise AnnexBError("access unit without a slice")
        nal = data[start:nxt].rstrip(b"\x00")
        if not nal:
            raise AnnexBError("empty NAL unit")
        head.append(nal)
        start = nxt + 3
    raise AnnexBError("too many NAL units before the first slice")


@dataclass
class PassthroughStats:
    published: int = 0
    keyframes: int = 0
    sps_rewritten: int = 0  # keyframes published with the rewritten SPS
    dropped: Counter[str] = field(default_factory=Counter)


class Passthrough:
    """One camera's pipeline: ``feed(unit, now_ns)`` → the message, or None."""

    def __init__(self, camera_id: str, codec: Codec) -> None:
        self.camera_id = camera_id
        self.codec = codec
        self.stats = PassthroughStats()
        self.reorder = Reorder.KEEP if codec is Codec.H265 else Reorder.UNDECIDED
        self._sets = ParameterSets(codec)
        self._seq = 0
        self._need_keyframe = True
        self._observed: list[int] | None = None  # PTS since the last keyframe, decode order
        self._sps_source: bytes | None = None  # the camera's SPS the cache below is for
        self._sps_out: bytes | None = None  # what keyframes carry for it

    def feed(self, unit: AccessUnit, now_ns: int) -> bytes | None:
        """The message for ``unit`` (read from the camera at ``now_ns``,
        CLOCK_REALTIME), or None if it must not be published."""
        if unit.codec is not self.codec:
            return self._drop("wrong_codec")
        if len(unit.data) > MAX_UNIT_BYTES:
            return self._drop("oversized")
        try:
            head, slices = split_head(unit.data, self.codec)
        except AnnexBError:
            return self._drop("malformed")
        # All slices of a picture share its type (H.264 7.4.1.2.4, H.265 7.4.2.4.4).
        keyframe = is_keyframe_nal(nal_type(unit.data[slices : slices + 2], self.codec), self.codec)
        self._sets.update(head)
        if unit.discontinuity and not keyframe:
            self._need_keyframe = True
        if keyframe:
            if not self._sets.complete():
                return self._drop("missing_parameter_sets")
            self._at_keyframe()
            # annexb.with_parameter_sets on the head: ours replace the unit's,
            # after an access unit delimiter (it must stay first).
            kinds = PARAMETER_SET_TYPES[self.codec]
            rest = [n for n in head if nal_type(n, self.codec) not in kinds]
            at = 1 if rest and nal_type(rest[0], self.codec) == AUD_TYPE[self.codec] else 0
            head = [*rest[:at], *self._outgoing_sets(), *rest[at:]]
        elif self._need_keyframe:
            return self._drop("waiting_for_keyframe")
        self._observe(unit.pts)
        meta = UnitMeta(self.camera_id, self._seq, now_ns, keyframe, self.codec)
        # Our SEI right before the first slice (sei.insert_metadata's place).
        # One copy of the picture's bytes (the memoryview is not copied first).
        message = b"".join(
            (join_nals([*head, metadata_nal(meta)]), START_CODE, memoryview(unit.data)[slices:])
        )
        self._need_keyframe = False
        self._seq += 1
        self.stats.published += 1
        self.stats.keyframes += keyframe
        return message

    def _drop(self, reason: str) -> bytes | None:
        self.stats.dropped[reason] += 1
        # The next units may refer to this one: nothing until a keyframe.
        self._need_keyframe = True
        return None

    # -- reorder delay (H.264) ------------------------------------------------

    def _at_keyframe(self) -> None:
        """Decide on the GOP that just ended, then watch the next one too: one
        reordered GOP is enough to stop rewriting for good."""
        if self.codec is not Codec.H264:
            return
        sps = self._sets.get(H264_SPS)
        assert sps is not None  # complete() was checked
        if sps != self._sps_source:
            # A new SPS: its own word (VUI, profile, POC type) or UNDECIDED; what
            # was seen under another SPS says nothing about this one.
            self._sps_source, self._sps_out = sps, None
            self.reorder = self._decide(sps, None)
        elif self.reorder in _WATCHED and self._observed is not None and len(self._observed) > 1:
            self.reorder = self._decide(sps, pts_reordered(self._observed))
        self._observed = [] if self.reorder in _WATCHED else None

    def _observe(self, pts: int | None) -> None:
        if self._observed is None:
            return
        if pts is None:
            return  # RTSP's first packet may have none; with none at all, no verdict
        self._observed.append(pts)
        if len(self._observed) >= MAX_OBSERVED and self._sps_source is not None:
            # A very long GOP: decide on what was seen, keep watching.
            self.reorder = self._decide(self._sps_source, pts_reordered(self._observed))
            self._observed = [] if self.reorder in _WATCHED else None

    def _decide(self, sps_nal: bytes, seen: bool | None) -> Reorder:
        try:
            return reorder_decision(parse_nal(sps_nal), seen)
        except (SpsError, AnnexBError):
            return Reorder.KEEP  # an SPS we cannot read is one we do not touch

    def _outgoing_sets(self) -> list[bytes]:
        sets = self._sets.nals()
        if self.reorder is not Reorder.REWRITE or self._sps_source is None:
            return sets
        if self._sps_out is None:
            try:
                self._sps_out = rewrite_nal(self._sps_source)
            except (SpsError, AnnexBError):
                self.reorder = Reorder.KEEP
                return sets
        self.stats.sps_rewritten += 1
        return [self._sps_out if nal == self._sps_source else nal for nal in sets]
