"""The embedded demo: a runner that shows failover happening on loopback servers.

The servers are the test kit's dependency-free ones (``mailer.testing``'s SMTP sink and
Resend fake, plain asyncio), because ``mailer demo`` must work from a plain install. They
count what they receive by Message-ID, which is how the demo proves that nothing was lost
and nothing was sent twice.
"""

from __future__ import annotations
