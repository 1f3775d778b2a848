"""What runs under trio: the Mailer and the HTTP providers do; the SMTP provider refuses.

aiosmtplib is asyncio-only. Left to run under trio, the SMTP provider failed at its first
asyncio call and reported a connect failure (or DeliveryUncertain) although nothing had
left the process; now it refuses with a ConfigError naming asyncio, before any I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailer import ConfigError, Mailer, Message
from mailer.providers._memory import MemoryProvider
from mailer.providers._smtp import SMTPProvider
from mailer.testing import FakeResend, SMTPTestServer, in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def message() -> Message:
    return Message(sender="app@example.com", to=["b@example.org"], subject="s", text="x")


@pytest.fixture
def resend_api() -> Iterator[FakeResend]:
    """The fake Resend API on its own asyncio loop in a thread (the test runs on trio)."""
    with in_thread(FakeResend(api_key="re_test")) as server:
        yield server


async def test_smtp_under_trio_refuses_before_any_io(plain_server: SMTPTestServer) -> None:
    provider = SMTPProvider.from_config("smtp", plain_server.config())
    with pytest.raises(ConfigError, match="asyncio only") as info:
        await provider.send(message())
    assert "under trio" in str(info.value)
    with pytest.raises(ConfigError, match="asyncio only"):
        await provider.verify()
    assert plain_server.state.connections == 0


async def test_a_mailer_with_smtp_under_trio_says_so_instead_of_failing_over(
    plain_server: SMTPTestServer,
) -> None:
    """Not a connect failure, not DeliveryUncertain, and no quiet failover to the backup:
    the SMTP provider would never work in this process, which is a setup error."""
    backup = MemoryProvider("backup")
    mailer = Mailer([SMTPProvider.from_config("smtp", plain_server.config()), backup])
    with pytest.raises(ConfigError, match="asyncio only"):
        await mailer.send(message())
    report = await mailer.verify()
    assert isinstance(report["smtp"], ConfigError) and report["backup"] is None
    assert backup.calls == 0
    assert plain_server.state.connections == 0
    await mailer.aclose()


async def test_http_provider_and_mailer_run_under_trio(resend_api: FakeResend) -> None:
    mailer = Mailer.from_config(
        {
            "providers": [
                {
                    "type": "resend",
                    "config": {"api_key": "re_test", "base_url": resend_api.base_url},
                }
            ]
        }
    )
    sent = message()
    result = await mailer.send(sent)
    assert result.provider == "resend"
    assert resend_api.received[sent.message_id] == 1
    await mailer.aclose()
