"""Ray cluster addresses, shared by the sweep and tune stages: fail fast when no head listens, and tell local ones."""

from __future__ import annotations

import logging
import os
import socket
from types import ModuleType

from pipeline.errors import ConvbenchError


def check_listening(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds when nothing listens at a Ray head's host:port; ray.init would retry for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto' and other forms are Ray's to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConvbenchError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            f"`ray start --head` or fix RAY_ADDRESS / --ray-address"
        ) from None


def is_local_address(address: str | None) -> bool:
    """Whether a Ray address ($RAY_ADDRESS when None) names this machine, so its workers share local files."""
    host = (address or os.environ.get("RAY_ADDRESS") or "").removeprefix("ray://").rpartition(":")[0]
    return host in ("127.0.0.1", "localhost", "::1", "[::1]")


def connect(address: str) -> ModuleType:
    """Ray, connected to the head at `address`; a missing install, a silent address or a failed join is one line."""
    try:
        import ray
    except ImportError:
        raise ConvbenchError("--backend ray needs Ray; install it with `pip install 'convbench[ray]'`") from None
    check_listening(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise ConvbenchError(
            f"cannot connect to the Ray cluster at {address} ({lines[-1] if lines else type(exc).__name__}); "
            f"start one with `ray start --head` or fix RAY_ADDRESS / --ray-address"
        ) from None
    return ray
