"""The embedded demo: loopback mail servers and a runner that shows failover happening.

Nothing here needs a network, an account or a dev dependency: the servers are small
asyncio programs of our own (aiosmtpd is only a test dependency, and ``mailer demo`` must
work from a plain install). They count what they receive by Message-ID, which is how the
demo proves that nothing was lost and nothing was sent twice.
"""

from __future__ import annotations

from .http_fake import FakeResendServer
from .smtp_sink import SMTPSink

__all__ = ["FakeResendServer", "SMTPSink"]
