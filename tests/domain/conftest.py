"""A local DNS server (dnslib) on 127.0.0.1 serving test zones, for ``doctor --domain``.

Answers come from a dict of (name, type) -> records; a name with no entry is NXDOMAIN.
Long TXT values are split into 255-byte strings, as real zones publish DKIM keys.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from dnslib import MX, QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from tests.cli.conftest import mailer_cli as mailer_cli  # the CLI runner, for doctor --domain

from mailer.testing import DKIMKey, dkim_key

Zone = dict[tuple[str, str], list[Any]]


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.asked: list[tuple[str, str]] = []

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        kind = QTYPE[request.q.qtype]
        self.asked.append((name, kind))
        if not any(n == name for n, _ in self.zone):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in self.zone.get((name, kind), []):
            if kind == "TXT":
                data = value.encode()
                chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
            elif kind == "MX":
                preference, host = value
                reply.add_answer(RR(name, QTYPE.MX, rdata=MX(host, preference), ttl=60))
        return reply


@dataclass
class LocalDNS:
    zone: Zone
    port: int
    resolver: ZoneResolver
    server: Any = field(repr=False)

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def local_dns() -> Iterator[Any]:
    """``local_dns(zone)`` starts a server for ``zone``; stopped after the test."""
    started: list[Any] = []

    def start(zone: Zone) -> LocalDNS:
        resolver = ZoneResolver(zone)
        port = _free_udp_port()
        quiet = DNSLogger(logf=lambda _text: None)  # dnslib logs each query to stdout
        server = DNSServer(resolver, address="127.0.0.1", port=port, logger=quiet)
        server.start_thread()
        started.append(server)
        return LocalDNS(zone, port, resolver, server)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def keys() -> tuple[DKIMKey, DKIMKey]:
    """Two different RSA keys (a zone may publish the wrong one), made once per session."""
    return dkim_key(0), dkim_key(1)
