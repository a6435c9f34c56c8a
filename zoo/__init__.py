"""zoo: a model zoo for machine-learned electronic Hamiltonians.

Layering (nothing below imports from above): physics <- data <- models <- bench <- cli.
"""

__version__ = "0.1.0"
