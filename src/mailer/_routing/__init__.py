"""Routing: the provider tree (groups and their leaves), the pre-commit budget, health
and rate limits, over the attempt layer (``mailer._attempt``). Private: the public names
are re-exported from ``mailer``."""
