"""`mean`: per-element invariant on-site means, off-site zero (a calibration baseline); see README.md."""

from zoo.models.mean.model import MeanOnsite

__all__ = ["MeanOnsite"]
