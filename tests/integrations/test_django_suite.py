"""Django's own ``BaseEmailBackendTests`` against ``mailer.django.EmailBackend``.

The tests come from the installed Django's source distribution (see django_suite.py),
run unchanged, with the backend configured the way a project does it: ``settings.MAILER``
naming one SMTP provider, here the aiosmtpd server Django's SMTP tests start on
127.0.0.1 (their ``SMTPHandler`` also checks that MAIL FROM matches the From header).

Only the tests listed in ``EXCLUDED`` are left out, each with its reason; docs/django.md
lists the same differences for users.
"""

from __future__ import annotations

import unittest
from typing import Any

from django.test import override_settings

from mailer.django import close_mailers

from .django_suite import load

_suite = load()

#: Django's tests that do not apply to this backend, and why. Nothing else is skipped.
EXCLUDED = {
    # exact encoding bytes: the same header and body, encoded another valid way (the
    # rest of what these tests check: test_django_contract.py, test_what_the_excluded_...)
    "test_send_unicode": "pins the Subject as a q-encoded word; ours is b-encoded "
    "(=?utf-8?b?...?=), which decodes to the same text",
    "test_send_verbose_name": "pins the From display name as a q-encoded word; ours is "
    "b-encoded, same decoded name",
    "test_send_long_lines": "pins quoted-printable for a mostly-Cyrillic body; ours "
    "chooses base64 when most of the bytes are not ASCII (shorter), same decoded text",
    # addresses without a domain: refused by our address rules, by design
    "test_recipient_without_domain": "sends to 'django' from 'tester': an address "
    "without a domain, which our address parser refuses (RFC 5321 4.1.2; a domainless "
    "recipient is relayed nowhere useful)",
    "test_lazy_addresses": "uses domainless lazy addresses ('tester', 'to1'); lazy "
    "from/to/cc/bcc/reply-to with domains: test_django_contract.py",
}


class MailerBackendTests(_suite.BaseEmailBackendTests, _suite.SMTPBackendTestsBase):  # type: ignore[misc,name-defined]
    """BaseEmailBackendTests with our backend, through settings.MAILER."""

    email_backend = "mailer.django.EmailBackend"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        mailer = {
            "providers": [
                {
                    "type": "smtp",
                    "name": "local",
                    "config": {
                        "host": cls.smtp_controller.hostname,
                        "port": cls.smtp_controller.port,
                        "connection_timeout": 2.0,
                        "socket_timeout": 3.0,
                        # One connection, as Django's SMTP backend uses: test_send_many
                        # asserts the order the server received two messages in, which
                        # concurrent connections do not promise (docs/django.md).
                        "pool": True,
                        "max_connections": 1,
                    },
                }
            ],
            "retry": {"attempts": 1},
        }
        cls.enterClassContext(override_settings(MAILER=mailer))
        cls.addClassCleanup(close_mailers)

    def setUp(self) -> None:
        super().setUp()
        self.smtp_handler.flush_mailbox()
        self.addCleanup(self.smtp_handler.flush_mailbox)

    def flush_mailbox(self) -> None:
        self.smtp_handler.flush_mailbox()

    def get_mailbox_content(self) -> list[Any]:
        mailbox: list[Any] = self.smtp_handler.mailbox
        return mailbox


for _name, _reason in EXCLUDED.items():  # skipped, so that each shows with its reason
    setattr(MailerBackendTests, _name, unittest.skip(_reason)(getattr(MailerBackendTests, _name)))
