"""DKIM signing: every signature is checked by dkimpy's verifier against the DNS record
this test serves it (``dnsfunc``), on the bytes the receiving side actually got.

Real parts: aiosmtpd servers on 127.0.0.1, the file provider's folder, SES's raw-MIME
request (respx, its documented shape), and freshly generated RSA and ed25519 keys.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
import respx

from mailer import ConfigError, Message, MessageError, TransientError
from mailer._message import dkim as _dkim
from mailer.providers._file import FileProvider
from mailer.providers._memory import MemoryProvider
from mailer.providers._sendgrid import SendGridProvider
from mailer.providers._ses import SESProvider
from mailer.providers._smtp import SMTPProvider
from mailer.testing import SMTPTestServer

from .kit import Keys, send_failing_over

pytestmark = pytest.mark.anyio


def message(**kw: Any) -> Message:
    base: dict[str, Any] = {
        "sender": "App <app@example.com>",
        "to": ["u@example.org"],
        "subject": "Signed",
        "text": "hello\r\n.\r\nstill here\n",
        "html": "<p>hello</p>",
    }
    base.update(kw)
    return Message(**base)


def received(server: SMTPTestServer, i: int = -1) -> bytes:
    content = server.state.messages[i].content
    return content if isinstance(content, bytes) else content.encode()


# --------------------------------------------------------------------------------- SMTP


@pytest.mark.parametrize("algorithm", ["rsa", "ed", "rsa-pkcs8"])
async def test_smtp_provider_signs_and_the_signature_verifies(
    plain_server: SMTPTestServer, keys: Keys, algorithm: str
) -> None:
    options = keys.ed() if algorithm == "ed" else keys.rsa()
    if algorithm == "rsa-pkcs8":
        options["private_key"] = keys.rsa_pkcs8
    config = plain_server.config(auth=None, dkim=options)
    async with SMTPProvider.from_config("smtp", config) as provider:
        await provider.send(
            message(attachments=[{"content": b"\x00\x01" * 5000, "filename": "a.bin"}])
        )
    tags = keys.verify(received(plain_server))
    assert tags[b"d"] == b"example.com"
    assert tags[b"a"] == (b"ed25519-sha256" if algorithm == "ed" else b"rsa-sha256")
    assert tags[b"c"] == b"relaxed/relaxed"
    # From signed twice (once more than present): no second From can be added
    assert tags[b"h"].lower().split(b":").count(b"from") == 2


async def test_per_message_options_win_over_the_provider(
    plain_server: SMTPTestServer, keys: Keys
) -> None:
    config = plain_server.config(auth=None, dkim=keys.rsa("example.com"))
    async with SMTPProvider.from_config("smtp", config) as provider:
        await provider.send(message(dkim=keys.ed("other.example")))
        await provider.send(message())
    first, second = (keys.verify(received(plain_server, i)) for i in (0, 1))
    assert (first[b"d"], first[b"s"]) == (b"other.example", b"ed")
    assert (second[b"d"], second[b"s"]) == (b"example.com", b"rsa")


async def test_idn_signing_domain_and_custom_header_list(
    plain_server: SMTPTestServer, keys: Keys
) -> None:
    options = keys.rsa("faß.de", headers=["From", "Subject", "X-Campaign"])
    async with SMTPProvider.from_config("smtp", plain_server.config(auth=None)) as provider:
        await provider.send(message(dkim=options, headers={"X-Campaign": "spring"}))
    tags = keys.verify(received(plain_server))
    assert tags[b"d"] == b"xn--fa-hia.de"
    assert tags[b"h"].lower() == b"from:subject:x-campaign"


async def test_tampering_breaks_the_signature(plain_server: SMTPTestServer, keys: Keys) -> None:
    """The verifier is really checking: the same bytes with one word changed fail."""
    async with SMTPProvider.from_config(
        "smtp", plain_server.config(auth=None, dkim=keys.rsa())
    ) as provider:
        await provider.send(message(subject="Pay 10 EUR"))
    data = received(plain_server)
    keys.verify(data)
    assert not dkim.verify(data.replace(b"Pay 10 EUR", b"Pay 99 EUR"), dnsfunc=keys.dns)


# --------------------------------------------------------------------- across failover


async def test_signature_is_made_once_and_survives_failover(
    smtp_server: Callable[..., SMTPTestServer],
    keys: Keys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SMTP (451 after the data) -> file -> a second SMTP: one signature, made once."""
    failing, good = smtp_server(), smtp_server()
    failing.state.fail("DATA_END", "451 4.3.0 try again later")
    msg = message(dkim=keys.rsa())  # validating the options signs a probe, once
    signed_in: list[str] = []
    real = _dkim._sign

    def counting(data: bytes, opts: Any, *, what: str = "dkim") -> bytes:
        signed_in.append(threading.current_thread().name)
        return real(data, opts, what=what)

    monkeypatch.setattr(_dkim, "_sign", counting)
    assert (await send_failing_over(failing, good, msg)).provider == "b"
    assert len(signed_in) == 1  # once, for both attempts
    assert signed_in[0] != threading.main_thread().name  # off the event loop's thread
    data = received(good)
    keys.verify(data)
    assert data.startswith(_dkim.signature(msg, msg.dkim))  # type: ignore[arg-type]
    # the file provider writes the same signed bytes, signature included
    async with FileProvider.from_config("f", {"directory": str(tmp_path)}) as fp:
        await fp.send(msg)
    (eml,) = tmp_path.glob("*.eml")
    assert eml.read_bytes().replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n")
    assert len(signed_in) == 1


async def test_memory_and_file_providers_sign_with_their_own_options(
    keys: Keys, tmp_path: Path
) -> None:
    mem = MemoryProvider.from_config("m", {"dkim": keys.ed()})
    fp = FileProvider.from_config("f", {"directory": str(tmp_path), "dkim": keys.rsa()})
    msg = message()
    await mem.send(msg)
    await fp.send(msg)
    assert keys.verify(mem.raw[0])[b"a"] == b"ed25519-sha256"
    (eml,) = tmp_path.glob("*.eml")
    assert keys.verify(eml.read_bytes())[b"a"] == b"rsa-sha256"


# -------------------------------------------------------------------------------- HTTP


async def test_ses_sends_signed_raw_mime(keys: Keys) -> None:
    config = {
        "region": "eu-west-1",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG",
        "base_url": "https://ses.test",
        "dkim": keys.rsa(),
    }
    with respx.mock(assert_all_called=True) as router:
        route = router.post("https://ses.test/v2/email/outbound-emails").mock(
            return_value=httpx.Response(200, json={"MessageId": "ses-1"})
        )
        async with SESProvider.from_config("ses", config) as provider:
            await provider.send(message())  # no attachments: would be Simple unsigned
    body = json.loads(route.calls.last.request.content)
    raw = base64.b64decode(body["Content"]["Raw"]["Data"])
    assert keys.verify(raw)[b"d"] == b"example.com"


async def test_json_api_providers_refuse_dkim_loudly(keys: Keys) -> None:
    with respx.mock(assert_all_called=False) as router:
        route = router.post("https://sg.test/v3/mail/send").mock(return_value=httpx.Response(202))
        provider = SendGridProvider.from_config(
            "sg", {"api_key": "SG.key", "base_url": "https://sg.test"}
        )
        with pytest.raises(MessageError, match=r"does not support dkim .*builds the MIME"):
            await provider.send(message(dkim=keys.rsa()))
        assert not route.called
    with pytest.raises(ConfigError, match="dkim"):
        SendGridProvider.from_config("sg", {"api_key": "SG.key", "dkim": keys.rsa()})


# ------------------------------------------------------------------------------ config


def test_bad_options_are_config_errors_without_the_key(keys: Keys, tmp_path: Path) -> None:
    bad_pem = "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWJ1dC1ub3QtYS1rZXk=\n-----END RSA"
    cases: list[tuple[dict[str, Any], str]] = [
        (keys.rsa(private_key=bad_pem), "cannot sign with rsa-sha256"),
        (keys.ed(private_key="c2hvcnQ="), "cannot sign with ed25519-sha256"),
        (keys.rsa(algorithm="ed25519-sha256"), "cannot sign with ed25519-sha256"),
        ({"domain": "example.com", "selector": "s"}, "exactly one of private_key"),
        (keys.rsa(headers=["subject"]), "must include from"),
        (keys.rsa(selector="bad selector"), "selector"),
        (keys.rsa(domain="☃.net"), "dkim.domain"),
        (
            {
                "domain": "example.com",
                "selector": "s",
                "private_key_file": str(tmp_path / "missing.pem"),
            },
            "cannot be read",
        ),
    ]
    for options, expected in cases:
        with pytest.raises(ConfigError, match=expected) as info:
            SMTPProvider.from_config("p", {"host": "127.0.0.1", "dkim": options})
        assert "c2VjcmV0" not in str(info.value) and keys.rsa_pem[40:80] not in str(info.value)
        with pytest.raises(MessageError, match=expected):
            message(dkim=options)


def test_key_file_and_secrets_kept_out_of_repr(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "dkim.pem"
    path.write_text(keys.rsa_pem)
    provider = SMTPProvider.from_config(
        "p",
        {
            "host": "127.0.0.1",
            "dkim": {"domain": "example.com", "selector": "rsa", "private_key_file": str(path)},
        },
    )
    msg = message(dkim=keys.rsa())
    for text in (repr(provider.config), repr(msg), str(msg.model_dump())):
        assert keys.rsa_pem[40:80] not in text


def test_defaults_keep_the_message_options(keys: Keys) -> None:
    msg = message(sender=None, dkim=keys.rsa())
    filled = msg.with_defaults({"sender": "app@example.com"})
    assert filled.dkim == msg.dkim and filled.sender is not None


async def test_unsent_message_is_not_signed_twice_under_concurrency(keys: Keys) -> None:
    """Two attempts racing for the first signature end up with one and the same."""
    import anyio

    msg = message(dkim=keys.rsa())
    assert msg.dkim is not None
    results: list[bytes] = []

    async def one() -> None:
        results.append(await _dkim.sign(msg, msg.dkim))  # type: ignore[arg-type]

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    assert len(set(results)) == 1
    keys.verify(results[0] + msg.as_bytes())


async def test_transient_failure_before_data_does_not_resign(
    smtp_server: Callable[..., SMTPTestServer], keys: Keys
) -> None:
    server = smtp_server()
    server.state.fail("MAIL", "451 4.3.0 busy", times=1)
    msg = message(dkim=keys.rsa())
    async with SMTPProvider.from_config("p", server.config(auth=None)) as provider:
        with pytest.raises(TransientError):
            await provider.send(msg)
        first = _dkim.signature(msg, msg.dkim)  # type: ignore[arg-type]
        await provider.send(msg)
    assert received(server).startswith(first)
