"""``mailer doctor --domain``: does a sending domain meet the 2024 bulk-sender rules?

:mod:`.lookup` does the DNS I/O (dnspython, the ``dns`` extra) and records what it found in
a :class:`Records`; :mod:`.rules` holds the pure decisions over that record (SPF parsing and
its lookup count, DMARC policy and alignment, DKIM key match), tested without DNS; the CLI
renders the :class:`Finding` list.
"""

from .lookup import check_domain, gather
from .rules import Finding, Records, judge

__all__ = ["Finding", "Records", "check_domain", "gather", "judge"]
