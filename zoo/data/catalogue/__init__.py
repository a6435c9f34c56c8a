"""The catalogue of built-in datasets (moved from zoo/data/catalogue.py; split into modules next)."""

from zoo.data.catalogue.build import *  # noqa: F401,F403
from zoo.data.catalogue.build import _c_hfo2, _given, _stop_workers, _worker_env  # noqa: F401  (tests use them)
