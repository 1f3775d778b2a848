"""``mailer doctor --domain`` against a local DNS server: a domain that meets the
bulk-sender rules, and one with a missing DMARC record, a broken SPF (an include with no
record, an unknown mechanism, more than 10 lookups) and a DKIM selector whose published
key is not the configured one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailer._domain import Records, check_domain, judge
from mailer._domain.rules import aligned, parse_spf, spf_lookups

pytestmark = pytest.mark.anyio

Runner = Callable[..., Any]


def good_zone(dkim_record: str) -> dict[tuple[str, str], list[Any]]:
    return {
        ("good.example", "MX"): [(10, "mx1.good.example")],
        ("good.example", "TXT"): ["v=spf1 include:_spf.good.example mx ~all", "other=1"],
        ("_spf.good.example", "TXT"): ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"],
        ("s1._domainkey.good.example", "TXT"): [dkim_record],
        ("_dmarc.good.example", "TXT"): ["v=DMARC1; p=quarantine; rua=mailto:d@good.example"],
        ("_mta-sts.good.example", "TXT"): ["v=STSv1; id=20240101"],
        ("_smtp._tls.good.example", "TXT"): ["v=TLSRPTv1; rua=mailto:tls@good.example"],
    }


def bad_zone(other_key_record: str) -> dict[tuple[str, str], list[Any]]:
    zone: dict[tuple[str, str], list[Any]] = {
        ("bad.example", "MX"): [(10, "mx.bad.example")],
        ("bad.example", "TXT"): [
            "v=spf1 include:chain1.bad.example include:gone.bad.example mx:bad.example "
            "bogus:thing ~all"
        ],
        ("gone.bad.example", "TXT"): ["just text"],  # an include without an SPF record
        ("s1._domainkey.bad.example", "TXT"): [other_key_record],
    }
    for i in range(1, 12):  # a chain of 11 includes: 10 more lookups (3 at the top)
        nxt = f" include:chain{i + 1}.bad.example" if i < 11 else ""
        zone[(f"chain{i}.bad.example", "TXT")] = [f"v=spf1 ip4:198.51.100.{i}{nxt} -all"]
    return zone


def _config(tmp_path: Path, domain: str, pem: str) -> Path:
    config = {
        "defaults": {"from": f"news@{domain}"},
        "providers": [{"type": "smtp", "config": {
            "host": "127.0.0.1",
            "dkim": {"domain": domain, "selector": "s1", "private_key": pem},
        }}],
    }  # fmt: skip
    path = tmp_path / "mailer.json"
    path.write_text(json.dumps(config))
    return path


def test_the_cli_passes_a_domain_that_meets_the_rules(
    local_dns: Any, keys: Any, mailer_cli: Runner, tmp_path: Path
) -> None:
    mine, _ = keys
    dns = local_dns(good_zone(mine.record))
    config = _config(tmp_path, "good.example", mine.pem)
    result = mailer_cli("doctor", "--domain", "good.example", "--nameserver", dns.nameserver,
                        "--config", str(config), "--json")  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    status = {f["check"]: f["status"] for f in report["findings"]}
    assert status == {"MX": "ok", "SPF": "ok", "DKIM s1": "ok", "DMARC": "ok",
                      "MTA-STS": "ok", "TLS-RPT": "ok"}  # fmt: skip
    spf = next(f for f in report["findings"] if f["check"] == "SPF")
    assert "(2 of 10 lookups)" in spf["summary"]  # include + mx
    dkim = next(f for f in report["findings"] if f["check"] == "DKIM s1")
    assert "matches the configured key" in dkim["summary"]


def test_the_cli_reports_missing_dmarc_broken_spf_and_a_mismatched_dkim_key(
    local_dns: Any, keys: Any, mailer_cli: Runner, tmp_path: Path
) -> None:
    mine, other = keys
    dns = local_dns(bad_zone(other.record))
    config = _config(tmp_path, "bad.example", mine.pem)
    result = mailer_cli("doctor", "--domain", "bad.example", "--nameserver", dns.nameserver,
                        "--config", str(config))  # fmt: skip
    assert result.code == 1
    text = " ".join(result.stdout.split())
    assert "DMARC fail no DMARC record at _dmarc.bad.example" in text
    assert 'publish TXT "v=DMARC1; p=none' in text
    assert "SPF fail broken:" in text
    assert "unknown mechanism 'bogus:thing'" in text
    assert "include:gone.bad.example has no SPF record" in text
    assert "13 DNS lookups, over the limit of 10" in text
    assert "DKIM s1 fail the key at s1._domainkey.bad.example does not match" in text
    assert "bad.example does not meet the bulk-sender rules: SPF, DKIM s1, DMARC" in result.stderr
    # the DNS server was really asked, for the SPF chain too
    assert ("chain11.bad.example", "TXT") in dns.resolver.asked


async def test_check_domain_records_what_the_server_said(local_dns: Any, keys: Any) -> None:
    mine, _ = keys
    dns = local_dns(good_zone(mine.record))
    rec, findings = await check_domain("Good.Example.", nameserver=dns.nameserver,
                                       selectors={"s1": None, "s2": None})  # fmt: skip
    assert rec.mx == [(10, "mx1.good.example")]
    assert rec.txt["_spf.good.example"] == ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"]
    assert rec.txt["s1._domainkey.good.example"] == [mine.record]  # rejoined from chunks
    by_check = {f.check: f for f in findings}
    assert by_check["DKIM s1"].status == "ok" and by_check["DKIM s2"].status == "fail"


def test_pure_rules() -> None:
    assert parse_spf("v=spf1 -all").all_qualifier == "-"
    assert parse_spf("v=spf1 a").problems == []
    txt = {"x.example": ["v=spf1 include:y.example a mx ptr exists:%{i}.z.example ~all"],
           "y.example": ["v=spf1 include:x.example -all"]}  # fmt: skip
    assert spf_lookups("x.example", txt) == 6  # a loop counts what it reached, once
    assert aligned("mail.example.com", "example.com", "r")
    assert not aligned("mail.example.com", "example.com", "s")
    rec = Records("example.com", txt={
        "example.com": ["v=spf1 +all"],
        "_dmarc.example.com": ["v=DMARC1; p=none; adkim=s"],
    }, from_domain="news.example.com")  # fmt: skip
    found = {f.check: f for f in judge(rec)}
    assert "+all lets any server" in found["SPF"].summary
    assert found["DMARC"].status == "fail" and "adkim=s" in found["DMARC"].summary
    assert found["MX"].status == "warn"
    assert found["DKIM"].status == "info"
