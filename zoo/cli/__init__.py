"""Command line: `zoo ...`. Holds argument parsing only; logic lives in the layers below."""
