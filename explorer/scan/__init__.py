"""Dataset scans: what every channel responds to across a whole image collection, locally or on Ray.

Modules, one job each: :mod:`~explorer.scan.sources` (what is read), :mod:`~explorer.scan.reduce` (the running
top-k and statistics), :mod:`~explorer.scan.store` (cache keys and atomic Parquet shards),
:mod:`~explorer.scan.fields` (receptive-field boxes), :mod:`~explorer.scan.local` and
:mod:`~explorer.scan.ray_backend` (the backends), :mod:`~explorer.scan.scanner` (:func:`scan`),
:mod:`~explorer.scan.results` (:class:`Scan`, :class:`Exemplar`), :mod:`~explorer.scan.report` (the HTML
report) and :mod:`~explorer.scan.samples` (:func:`sample_dataset`).

``explorer.scan`` is both this package and the function :func:`scan`: the package module is callable and
forwards to the function, so ``explorer.scan(...)`` works however the package was first imported.

Example::

    >>> scan = explorer.scan("default", explorer.sample_dataset(n=64), out_indices=[2], k=4)
    >>> scan.top("blocks.2", 17)[0].value
    9.43
"""

from __future__ import annotations

import sys
import types

from .results import Exemplar, Scan
from .samples import sample_dataset
from .scanner import scan

__all__ = ["Exemplar", "Scan", "sample_dataset", "scan"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Scan:
        return scan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
