"""nbval set-up for the teaching notebooks: no network, and no comparison of outputs that cannot be stable.

Kernels started by nbval inherit this process's environment, so the variables set here reach the notebooks.
Text outputs (shapes, channel counts, stage names, error messages, rounded statistics) are compared strictly;
what changes from run to run is masked by ``sanitize.cfg`` (temporary paths, the device) or left out here by
output type. A cell whose whole output is unstable (the panel) carries the ``nbval-ignore-output`` tag.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # model hubs are never asked: every notebook runs without a network
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

UNSTABLE_MIME_TYPES = (
    "image/png",  # pixels differ across BLAS builds and platforms; the text beside each image is compared
    "image/jpeg",
    "text/html",  # HTML reprs (widgets, tables) carry generated ids
    "application/vnd.jupyter.widget-view+json",  # model ids are random
    "application/vnd.jupyter.widget-state+json",
    "application/vnd.plotly.v1+json",  # plotly figures carry random uids
)
"""Output types nbval does not compare (it skips images and widget views by default; listed so that
``--nbdime`` or a change of nbval's defaults does not bring them back)."""


def pytest_collectstart(collector):
    """Add :data:`UNSTABLE_MIME_TYPES` to nbval's skip list, for notebook files only."""
    if str(getattr(collector, "path", "")).endswith(".ipynb") and hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(dict.fromkeys((*collector.skip_compare, *UNSTABLE_MIME_TYPES)))
