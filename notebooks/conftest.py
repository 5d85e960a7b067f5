"""nbval set-up for the teaching notebooks: no network, and no comparison of outputs that cannot be stable.

Kernels started by nbval inherit this process's environment, so the variables set here reach the notebooks.
Text outputs (shapes, channel counts, stage names, error messages, rounded statistics) are compared strictly;
what changes from run to run is masked by ``sanitize.cfg`` (paths, devices) or left out here by type.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # model hubs are never asked: every notebook runs without a network
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Not compared (nbval already skips image/png, image/jpeg and widget views):
# - text/html: HTML reprs of widgets and tables carry generated ids;
# - the plotly and widget-state payloads hold random ids and layout numbers.
UNSTABLE_MIME_TYPES = (
    "text/html",
    "application/vnd.plotly.v1+json",
    "application/vnd.jupyter.widget-state+json",
    "image/svg+xml",
)


def pytest_collectstart(collector):
    """Extend nbval's list of output types it does not compare, for notebooks only."""
    if str(getattr(collector, "path", "")).endswith(".ipynb") and hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(collector.skip_compare) + UNSTABLE_MIME_TYPES
