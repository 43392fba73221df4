"""Opening a run's feature-evolution explorer: ``python -m saetrack.explorer runs/<preset>`` serves it on localhost.

The explorer itself is built by notebook 07's stage (:mod:`saetrack.stages.explorer`) as static files that open from
the file system; this package only finds them (:func:`~saetrack.explorer.serve.site_root`) and serves them
(:func:`~saetrack.explorer.serve.serve`) for browsers that block pages from ``file://`` loading scripts beside them.
"""

from saetrack.explorer.serve import ExplorerNotFoundError, serve, site_root

__all__ = ["ExplorerNotFoundError", "serve", "site_root"]
