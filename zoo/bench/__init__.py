"""The harness: trainer, losses, metric suite, leaderboards, reports and the `zoo bench` run."""
