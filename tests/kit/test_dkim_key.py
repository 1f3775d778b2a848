"""The kit's DKIM test key: a real RSA key whose published record verifies what it signs
(dkimpy, the independent verifier), made once per process and never shown in a repr."""

from __future__ import annotations

import dkim
import pytest

from mailer import Message
from mailer._message.dkim import signature
from mailer.testing import DKIMKey, dkim_key


def _signed(key: DKIMKey, private_key: str) -> bytes:
    """The message as an SMTP provider sends it: our signature header, then the rest."""
    options = {**key.options(selector="s1"), "private_key": private_key}
    message = Message(
        sender="a@example.com", to=["b@example.org"], subject="s", text="t", dkim=options
    )
    assert message.dkim is not None
    return signature(message, message.dkim) + message.as_bytes()


def _dns(record: str) -> object:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return record.encode() if name.rstrip(b".") == b"s1._domainkey.example.com" else b""

    return lookup


def test_each_pem_form_signs_what_its_record_verifies_and_only_its_own() -> None:
    first, second = dkim_key(0), dkim_key(1)
    assert first.pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert first.pkcs8.startswith("-----BEGIN PRIVATE KEY-----")
    assert first.record.startswith("v=DKIM1; k=rsa; p=")
    for private_key in (first.pem, first.pkcs8):
        data = _signed(first, private_key)
        assert dkim.verify(data, dnsfunc=_dns(first.record))
        assert not dkim.verify(data, dnsfunc=_dns(second.record))


def test_made_once_per_index_and_the_pem_never_in_its_repr() -> None:
    assert dkim_key(0) is dkim_key() and dkim_key(1) is dkim_key(1)
    assert dkim_key(0).pem != dkim_key(1).pem
    assert "PRIVATE" not in repr(dkim_key(0)) and dkim_key(0).pem[40:80] not in repr(dkim_key(0))
    with pytest.raises(ValueError, match="index >= 0"):
        dkim_key(-1)
