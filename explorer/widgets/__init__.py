"""The panel: :class:`Explorer`, its state (:class:`ExplorerState`) and engine (:class:`Controller`)."""

from .app import Explorer
from .engine import Controller, Frame
from .state import ExplorerState

__all__ = ["Controller", "Explorer", "ExplorerState", "Frame"]
