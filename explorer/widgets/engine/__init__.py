"""The panel's engine: state in, immutable frames out; no widgets and no HTML layout (see DESIGN.md, "The panel").

- :mod:`.frame`: the :class:`Frame` and its parts (status, grids, the scene views compute from);
- :mod:`.gallery`: the images, identified by serials, never by ``id()``;
- :mod:`.scheduler`: coalescing, the one worker (loads and forwards in a helper it waits on), and the hand-over
  of frames to the kernel's thread;
- :mod:`.runtime`: backbones, captures and drawn parts behind their own lock;
- :mod:`.rules`: which selections and values can be shown (the library's stage rules), and corrections;
- :mod:`.codegen`: the library code for the tab on show;
- :mod:`.offload`: loads and captures off the worker, and the display-only draws made while they run;
- :mod:`.controller`: the :class:`Controller` that ties them together, and the one correction path.
"""

from .controller import Controller
from .frame import GRID_SIZE, Frame, Grid, Scene, Status
from .gallery import Gallery

__all__ = ["GRID_SIZE", "Controller", "Frame", "Gallery", "Grid", "Scene", "Status"]
