"""The panels: :class:`Explorer`, its state (:class:`ExplorerState`) and engine (:class:`Session`)."""

from .app import Explorer
from .session import Session
from .state import ExplorerState

__all__ = ["Explorer", "ExplorerState", "Session"]
