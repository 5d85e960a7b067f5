"""Files from the Hugging Face hub: from the local cache when there, else downloaded, else a clear error, fast.

The hub is asked only after a two-second connection check, so an unreachable hub (no network, a firewall) fails
in seconds instead of hanging on the client's retries. ``HF_HUB_OFFLINE=1`` skips the network entirely.

Example::

    >>> path, origin = hub_file("timm/resnet18.a1_in1k", "model.safetensors")
    >>> origin
    'cache'
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

from ..errors import WeightsUnavailableError

__all__ = ["hub_file", "hub_reachable", "ALTERNATIVES"]

ALTERNATIVES = (
    'Alternatives: the built-in "default" backbone (its ImageNet weights ship with the package), '
    "a local checkpoint file or folder, or pretrained=False for random weights."
)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


@lru_cache(maxsize=4)
def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """Whether the hub endpoint accepts a connection (remembered for the session; False when offline)."""
    if _offline():
        return False
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    return _connects(endpoint.hostname or "huggingface.co", endpoint.port or 443)


def hub_file(repo_id: str, filename: str) -> tuple[str, str]:
    """Path of ``filename`` in hub repo ``repo_id`` and where it came from: ``"cache"`` or ``"hub"``.

    Raises:
        WeightsUnavailableError: not cached and the hub cannot be reached, or the repo lacks the file.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return cached, "cache"
    if not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if _offline() else "the hub cannot be reached from this machine"
        raise WeightsUnavailableError(
            f"{filename} of {repo_id} is not in the local Hugging Face cache and {why}. {ALTERNATIVES}"
        )
    try:
        return hf_hub_download(repo_id, filename, etag_timeout=5), "hub"
    except Exception as err:  # the client raises many types: HTTP, repo and file-not-found, timeouts
        raise WeightsUnavailableError(f"Could not download {filename} of {repo_id}: {err}. {ALTERNATIVES}") from err
