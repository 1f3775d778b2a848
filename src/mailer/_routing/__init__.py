"""Routing: attempts and their commit point, the pre-commit budget, health, and the
provider groups (Failover, Weighted) that the Mailer is a front end over. Private: the
public names are re-exported from ``mailer``."""
