"""Files from the Hugging Face hub: from the local cache when there, else downloaded, else a clear error, fast.

The hub is asked only after a two-second request to its endpoint has been answered, so an unreachable hub (no
network, a firewall, a server that accepts connections but never answers) fails in seconds instead of hanging on
the client's retries. ``HF_HUB_OFFLINE=1`` skips the network entirely.

Example::

    >>> hub_file("timm/resnet18.a1_in1k", "model.safetensors")      # offline, and not in the cache
    Traceback (most recent call last):
    explorer.errors.WeightsUnavailableError: model.safetensors of timm/resnet18.a1_in1k is not in the local ...
"""

from __future__ import annotations

import os
from functools import lru_cache

from ..errors import WeightsUnavailableError

__all__ = ["hub_file", "hub_reachable", "ALTERNATIVES"]

ALTERNATIVES = (
    'Alternatives: the built-in "default" backbone (its ImageNet weights ship with the package), '
    "a local checkpoint file or folder, or pretrained=False for random weights."
)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").upper() in (
        "1",
        "ON",
        "YES",
        "TRUE",
    )


@lru_cache(maxsize=4)
def _answers(endpoint: str) -> bool:
    """Whether ``endpoint`` answers an HTTP request within two seconds (any status counts)."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=2.0, follow_redirects=False)
    except Exception:  # refused, DNS, timeout, TLS, proxy: the HTTP client raises many types
        return False
    return True


def hub_reachable() -> bool:
    """Whether the hub endpoint answers (remembered for the session; False when offline)."""
    if _offline():
        return False
    from huggingface_hub import constants

    return _answers(constants.ENDPOINT)


def hub_file(repo_id: str, filename: str) -> tuple[str, str]:
    """Path of ``filename`` in hub repo ``repo_id`` and where it came from: ``"cache"`` or ``"hub"``.

    Raises:
        WeightsUnavailableError: not cached and the hub cannot be reached, or the repo lacks the file.
    """
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return cached, "cache"
    if not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if _offline() else f"the hub ({constants.ENDPOINT}) does not answer"
        raise WeightsUnavailableError(
            f"{filename} of {repo_id} is not in the local Hugging Face cache and {why}. {ALTERNATIVES}"
        )
    try:
        return hf_hub_download(repo_id, filename, etag_timeout=5, endpoint=constants.ENDPOINT), "hub"
    except Exception as err:  # the client raises many types: HTTP, repo and file-not-found, timeouts
        raise WeightsUnavailableError(
            f"Could not download {filename} of {repo_id}: {err}. {ALTERNATIVES}"
        ) from err
