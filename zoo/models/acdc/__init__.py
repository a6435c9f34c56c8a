"""`acdc`: GEARS H-style atom-centred density correlations; see README.md."""

from zoo.models.acdc.model import ACDC

__all__ = ["ACDC"]
