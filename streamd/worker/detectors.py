"""Detectors: given a frame and the time, return detections in frame coordinates.

- ``motion`` (default): MOG2 background subtraction on a downscaled grey frame,
  minimum area, ignore zones (polygons in frame coordinates), warm-up period.
- ``onnx``: a user-supplied model through ``cv2.dnn`` in the common YOLO output
  layout (``[1, 4 + classes, N]`` of cx, cy, w, h and class scores, or its
  transpose), then non-maximum suppression.
- ``module:attribute``: a Python plugin; ``attribute`` is called with the
  camera's ``DetectorConfig`` and returns an object with ``detect(image, now)``.
- ``none``: no detection.

OpenCV 5 no longer ships the HOG people detector or Haar cascades, so object
detection comes from model files the user brings.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from streamd.config import DetectorConfig
from streamd.errors import StreamdError


class DetectorError(StreamdError, RuntimeError):
    """A detector could not be built; the message names the cause."""


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in frame pixels

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "score": round(self.score, 3), "box": list(self.box)}


class Detector(Protocol):
    """``image`` is BGR, or grey (HxW) for a detector whose ``reads_grey`` is True:
    from a video camera that grey is the decoder's Y plane, with no conversion."""

    def detect(self, image: np.ndarray, now: float) -> Sequence[Detection]: ...


class MotionDetector:
    """Moving regions against a learned background (MOG2), on a grey picture."""

    reads_grey = True

    def __init__(self, config: DetectorConfig, work_width: int = 320) -> None:
        self.min_area = config.motion_min_area
        self.warmup = config.motion_warmup
        self.zones = [np.array(zone, np.int32) for zone in config.ignore_zones]
        self.work_width = work_width
        self._subtractor = cv2.createBackgroundSubtractorMOG2(history=200, detectShadows=False)
        self._started: float | None = None
        self._mask_cache: tuple[tuple[int, int], np.ndarray | None] | None = None
        self._kernel = np.ones((3, 3), np.uint8)

    def _ignore_mask(self, shape: tuple[int, int], scale: float) -> np.ndarray | None:
        """Zones rasterised once per frame size, in work coordinates."""
        if not self.zones:
            return None
        if self._mask_cache is None or self._mask_cache[0] != shape:
            mask = np.full(shape, 255, np.uint8)
            for zone in self.zones:
                cv2.fillPoly(mask, [np.round(zone * scale).astype(np.int32)], 0)
            self._mask_cache = (shape, mask)
        return self._mask_cache[1]

    def detect(self, image: np.ndarray, now: float) -> list[Detection]:
        if self._started is None:
            self._started = now
        height, width = image.shape[:2]
        scale = min(1.0, self.work_width / width)
        small = (
            cv2.resize(
                image,
                (max(1, round(width * scale)), max(1, round(height * scale))),
                interpolation=cv2.INTER_AREA,
            )
            if scale < 1.0
            else image
        )
        if small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        grey = cv2.GaussianBlur(small, (5, 5), 0)
        foreground = self._subtractor.apply(grey)
        if now - self._started < self.warmup:
            return []  # still learning the background
        _, foreground = cv2.threshold(foreground, 127, 255, cv2.THRESH_BINARY)
        mask = self._ignore_mask(foreground.shape[:2], scale)
        if mask is not None:
            foreground = cv2.bitwise_and(foreground, mask)
        foreground = cv2.dilate(foreground, self._kernel, iterations=2)
        contours, _ = cv2.findContours(foreground, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        detections = []
        min_area_small = self.min_area * scale * scale
        for contour in contours:
            area = cv2.contourArea(contour)
            if area < min_area_small:
                continue
            x, y, w, h = cv2.boundingRect(contour)
            box = (round(x / scale), round(y / scale), round(w / scale), round(h / scale))
            detections.append(Detection("motion", min(1.0, area / (w * h + 1e-9)), box))
        return detections


def read_labels(labels: tuple[str, ...] | str | None) -> list[str]:
    if labels is None:
        return []
    if isinstance(labels, str):
        try:
            return [line.strip() for line in Path(labels).read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise DetectorError(f"cannot read labels file {labels}: {exc.strerror}") from None
    return list(labels)


class OnnxDetector:
    """A YOLO-layout ONNX model through cv2.dnn (input resized to a square)."""

    def __init__(self, config: DetectorConfig) -> None:
        if not config.model:
            raise DetectorError('detector = "onnx" needs model = "/path/to/model.onnx"')
        try:
            self.net = cv2.dnn.readNetFromONNX(config.model)
        except cv2.error as exc:
            raise DetectorError(f"cannot load ONNX model {config.model}: {exc}") from None
        self.labels = read_labels(config.labels)
        self.size = config.input_size
        self.score_threshold = config.score_threshold
        self.nms_threshold = config.nms_threshold

    def detect(self, image: np.ndarray, now: float) -> list[Detection]:
        height, width = image.shape[:2]
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (self.size, self.size), swapRB=True)
        self.net.setInput(blob)
        output = np.asarray(self.net.forward())
        return decode_yolo(
            output,
            width / self.size,
            height / self.size,
            self.labels,
            self.score_threshold,
            self.nms_threshold,
        )


def decode_yolo(
    output: np.ndarray,
    scale_x: float,
    scale_y: float,
    labels: list[str],
    score_threshold: float,
    nms_threshold: float,
) -> list[Detection]:
    """``[1, 4 + C, N]`` (or ``[1, N, 4 + C]``) → detections after NMS (pure)."""
    rows = output.reshape(output.shape[-2], output.shape[-1])
    channels = 4 + len(labels)
    if labels and rows.shape[0] == channels and rows.shape[1] != channels:
        rows = rows.T  # [4 + C, N] → [N, 4 + C]
    elif not (labels and rows.shape[1] == channels) and rows.shape[0] < rows.shape[1]:
        rows = rows.T  # no labels to go by: candidates outnumber channels in real models
    if rows.shape[1] < 5:
        return []
    scores = rows[:, 4:]
    class_ids = scores.argmax(axis=1)
    best = scores[np.arange(len(rows)), class_ids]
    keep = best >= score_threshold
    boxes = []
    for cx, cy, w, h in rows[keep, :4]:
        boxes.append(
            [
                int((cx - w / 2) * scale_x),
                int((cy - h / 2) * scale_y),
                int(w * scale_x),
                int(h * scale_y),
            ]
        )
    kept_scores = [float(s) for s in best[keep]]
    kept_classes = [int(c) for c in class_ids[keep]]
    if not boxes:
        return []
    indices = cv2.dnn.NMSBoxes(boxes, kept_scores, score_threshold, nms_threshold)
    detections = []
    for index in np.asarray(indices).reshape(-1):
        cls = kept_classes[index]
        label = labels[cls] if cls < len(labels) else f"class{cls}"
        x, y, w, h = boxes[index]
        detections.append(Detection(label, kept_scores[index], (x, y, w, h)))
    return detections


def load_plugin(spec: str, config: DetectorConfig) -> Detector:
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:
        raise DetectorError(f"cannot import plugin module {module_name!r}: {exc}") from None
    except AttributeError:
        raise DetectorError(f"plugin module {module_name!r} has no {attribute!r}") from None
    try:
        detector = factory(config)
    except Exception as exc:  # a plugin's own failure must not take the camera down
        raise DetectorError(f"plugin {spec!r} failed to start: {exc!r}") from None
    if not callable(getattr(detector, "detect", None)):
        raise DetectorError(f"plugin {spec!r} returned an object without detect(image, now)")
    return detector  # type: ignore[no-any-return]


def build_detector(config: DetectorConfig) -> Detector | None:
    """The camera's detector, None for ``none``; ``DetectorError`` if it cannot load."""
    if config.kind == "none":
        return None
    if config.kind == "motion":
        return MotionDetector(config)
    if config.kind == "onnx":
        return OnnxDetector(config)
    return load_plugin(config.kind, config)
