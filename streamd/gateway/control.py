"""What the gateway may ask of the daemon, and a stand-in where there is none."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from streamd.camera_status import CameraStatus


class Control(Protocol):
    """What the gateway may ask of the daemon (implemented by ``daemon.py``)."""

    async def start_camera(self, camera_id: str) -> bool: ...

    async def stop_camera(self, camera_id: str) -> bool: ...

    async def reload(self) -> tuple[bool, str]: ...

    def camera_statuses(self) -> Mapping[str, CameraStatus]: ...

    def fork_server(self) -> Mapping[str, object] | None:
        """The warm fork server's state (``/api/cameras``), None without one."""
        ...

    def metrics(self, cameras: Collection[str] | None) -> bytes: ...

    def viewers_changed(self, camera_id: str) -> None: ...

    def camera_log(self, camera_id: str, lines: int) -> list[dict[str, Any]] | None:
        """The camera's newest ``lines`` records (camera_log.py); None if not run here."""
        ...

    def this_node(self) -> dict[str, Any] | None:
        """This node's name, role, owned cameras and lease age (``GET /api/nodes``)."""
        ...

    def set_publish_interval(self, camera_id: str, every: int) -> bool:
        """Publish every ``every``-th paced frame (live, no restart); False if
        the camera is not run here."""
        ...


class NoControl:
    """A gateway without a supervisor (benchmarks, other tools): nothing to control."""

    async def start_camera(self, camera_id: str) -> bool:
        return False

    async def stop_camera(self, camera_id: str) -> bool:
        return False

    async def reload(self) -> tuple[bool, str]:
        return False, "no supervisor"

    def camera_statuses(self) -> Mapping[str, CameraStatus]:
        return {}

    def fork_server(self) -> Mapping[str, object] | None:
        return None

    def metrics(self, cameras: Collection[str] | None) -> bytes:
        return b""

    def viewers_changed(self, camera_id: str) -> None:
        pass

    def camera_log(self, camera_id: str, lines: int) -> list[dict[str, Any]] | None:
        return None

    def this_node(self) -> dict[str, Any] | None:
        return None

    def set_publish_interval(self, camera_id: str, every: int) -> bool:
        return False
