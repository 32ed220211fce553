"""The run store: one zarr v3 group per recorded run (see :mod:`crystalseg.store.core`)."""

from crystalseg.store.core import *  # noqa: F403
