"""Batch sending: ``Mailer.send_many`` and ``send_batch`` vs a loop of ``send`` vs the
official SDK, per ESP.

A local fake of the Postmark, Resend, Mailtrap, MailerSend and Mandrill APIs
(benchmarks/_fake_esp.py, its own process) behind latency-proxy --delay-ms 5 (a 10 ms round
trip). For each ESP, in one run:

* ``Mailer.send_many``: a Mailer over the provider, ``await mailer.send_many(messages)``
  (each message routed as by ``send``, 100 at a time, merged into batch requests);
* ``send_batch``: ``provider.send_batch(messages)`` (Postmark /email/batch 500 per request,
  Resend /emails/batch 100 per request, Mailtrap /api/batch 500 per request, MailerSend
  /v1/bulk-email 500 per request with ``bulk = true``, then its status polled: the fake
  completes a bulk at the first poll; Mandrill messages/send with every message's recipient
  merged, ``preserve_recipients: false``, 500 per request: Mandrill's messages here share
  one content, the case its batch form is for),
  ``max_connections`` requests at a time;
* ``loop of send``: ``for m in messages: await provider.send(m)``;
* the official SDK's per-message call, in a loop: postmarker's
  ``PostmarkClient.emails.send``, resend's ``resend.Emails.send``, mailersend's
  ``MailerSendClient.emails.send``, mailchimp-transactional's ``messages.send`` and mailtrap's
  ``MailtrapClient.send`` (all synchronous, on requests; Mailtrap's client builds
  ``https://`` URLs only, so its HttpClient is pointed at the plain-HTTP fake by one
  override of ``_url``, the rest of the SDK unchanged).

SparkPost's recipient lists are not built (docs/providers.md, "Batch sending"), so it is
not here.

The sequential cases run ``--loop-count`` messages (their rate does not depend on how many):
10,000 of them would take minutes each. Messages/s are compared in the same run.

    .venv/bin/python benchmarks/batch.py [--count 10000] [--loop-count 500] [--rounds 3]
        [--esps postmark,resend,mailtrap,mailersend,mandrill]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HOST, free_port, latency_proxy, machine, ratio, spawn, stop, table, wait_port

from mailer import Mailer, Message, SendResult
from mailer.providers._mailersend import MailerSendProvider
from mailer.providers._mailtrap import MailtrapProvider
from mailer.providers._mandrill import MandrillProvider
from mailer.providers._postmark import PostmarkProvider
from mailer.providers._resend import ResendProvider
from mailer.providers.http import HTTPProvider

FAKE = Path(__file__).resolve().parent / "_fake_esp.py"


def messages(n: int, shared: bool = False) -> list[Message]:
    """``n`` messages to different recipients; ``shared``: one content for all (the
    subject is otherwise numbered)."""
    return [Message(sender="Shop <shop@example.com>", to=[f"user{i}@example.org"],
                    subject="Your order" if shared else f"Order {i}",
                    text="Thanks for your order.\n" * 20,
                    html="<p>Thanks for your order.</p>" * 20) for i in range(n)]  # fmt: skip


def batch_of(kind: str, n: int) -> list[Message]:
    return messages(n, shared=kind == "mandrill")


def provider(kind: str, base_url: str) -> HTTPProvider:
    if kind == "postmark":
        return PostmarkProvider.from_config("postmark", {"server_token": "bench-token",
                                                         "base_url": base_url})  # fmt: skip
    if kind == "mailtrap":
        return MailtrapProvider.from_config("mailtrap", {"api_token": "mt-bench",
                                                         "base_url": base_url})  # fmt: skip
    if kind == "mandrill":
        return MandrillProvider.from_config("mandrill", {"api_key": "md-bench",
                                                         "base_url": base_url})  # fmt: skip
    if kind == "mailersend":
        return MailerSendProvider.from_config("mailersend", {"api_key": "ms-bench", "bulk": True,
                                                             "base_url": base_url})  # fmt: skip
    return ResendProvider.from_config("resend", {"api_key": "re_bench", "base_url": base_url})


async def _batch(kind: str, base_url: str, n: int) -> float:
    p = provider(kind, base_url)
    msgs = batch_of(kind, n)
    await p.send(msgs[0])  # warm the connection
    start = time.perf_counter()
    outcomes = await p.send_batch(msgs)
    took = time.perf_counter() - start
    await p.aclose()
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes[:3]
    return n / took


async def _send_many(kind: str, base_url: str, n: int) -> float:
    mailer = Mailer([provider(kind, base_url)])
    msgs = batch_of(kind, n)
    async with mailer:
        await mailer.send(msgs[0])  # warm the connection
        start = time.perf_counter()
        outcomes = await mailer.send_many(msgs)
        took = time.perf_counter() - start
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes[:3]
    return n / took


async def _loop(kind: str, base_url: str, n: int) -> float:
    p = provider(kind, base_url)
    msgs = batch_of(kind, n)
    await p.send(msgs[0])
    start = time.perf_counter()
    for m in msgs:
        await p.send(m)
    took = time.perf_counter() - start
    await p.aclose()
    return n / took


def _sdk(kind: str, base_url: str, n: int) -> float:
    msgs = batch_of(kind, n)
    if kind == "postmark":
        from postmarker.core import PostmarkClient

        client = PostmarkClient(server_token="bench-token", root_api_url=base_url + "/")

        def send(m: Message) -> None:
            client.emails.send(From=str(m.sender), To=str(m.to[0]), Subject=m.subject,
                               TextBody=m.text, HtmlBody=m.html)  # fmt: skip
    elif kind == "mailtrap":
        from mailtrap import MailtrapClient
        from mailtrap.api.sending import SendingApi
        from mailtrap.http import HttpClient
        from mailtrap.models.mail import Address, Mail

        class PlainHTTP(HttpClient):  # the fake speaks plain HTTP; the SDK builds https://
            def _url(self, path: str) -> str:
                return f"{base_url}/{path.lstrip('/')}"

        sdk = MailtrapClient(token="mt-bench")
        api = SendingApi(client=PlainHTTP(host="fake", headers=sdk.headers))

        def send(m: Message) -> None:
            assert m.sender is not None
            api.send(Mail(sender=Address(email=m.sender.email, name=m.sender.name),
                          to=[Address(email=m.to[0].email)], subject=m.subject,
                          text=m.text, html=m.html))  # fmt: skip
    elif kind == "mandrill":
        import mailchimp_transactional

        md = mailchimp_transactional.Client("md-bench")
        md.api_client.host = f"{base_url}/api/1.3"

        def send(m: Message) -> None:
            assert m.sender is not None
            md.messages.send({"message": {
                "from_email": m.sender.email, "from_name": m.sender.name,
                "to": [{"email": m.to[0].email, "type": "to"}], "subject": m.subject,
                "text": m.text, "html": m.html}})  # fmt: skip
    elif kind == "mailersend":
        from mailersend import MailerSendClient
        from mailersend.models.email import EmailContact, EmailRequest

        ms = MailerSendClient(api_key="ms-bench", base_url=f"{base_url}/v1/", max_retries=0)

        def send(m: Message) -> None:
            assert m.sender is not None
            ms.emails.send(EmailRequest(
                from_email=EmailContact(email=m.sender.email, name=m.sender.name),
                to=[EmailContact(email=m.to[0].email)], subject=m.subject, text=m.text,
                html=m.html))  # fmt: skip
    else:
        import resend

        resend.api_key = "re_bench"
        resend.api_url = base_url

        def send(m: Message) -> None:
            resend.Emails.send({"from": str(m.sender), "to": [str(m.to[0])],
                                "subject": m.subject, "text": m.text, "html": m.html})  # fmt: skip

    send(msgs[0])
    start = time.perf_counter()
    for m in msgs:
        send(m)
    return n / (time.perf_counter() - start)


def run(count: int, loop_count: int, rounds: int, delay_ms: float, esps: list[str]) -> None:
    print(f"batch: {machine()}")
    print(f"  latency-proxy {delay_ms:g} ms each way; send_batch {count} messages, "
          f"sequential cases {loop_count}; {rounds} rounds, medians")  # fmt: skip
    port = free_port()
    fake = spawn([sys.executable, FAKE, "--port", str(port)])
    try:
        wait_port(port, fake)
        with latency_proxy(port, delay_ms) as proxied:
            base_url = f"http://{HOST}:{proxied}"
            rows = []
            for kind in esps:
                cases: dict[str, Callable[[], float]] = {
                    "Mailer.send_many": lambda k=kind: asyncio.run(_send_many(k, base_url, count)),
                    "send_batch": lambda k=kind: asyncio.run(_batch(k, base_url, count)),
                    "loop of send": lambda k=kind: asyncio.run(_loop(k, base_url, loop_count)),
                    "official SDK loop": lambda k=kind: _sdk(k, base_url, loop_count),
                }
                rates: dict[str, list[float]] = {name: [] for name in cases}
                for r in range(rounds):
                    for name, fn in cases.items():
                        rates[name].append(fn())
                        print(f"  {kind} round {r + 1} {name}: {rates[name][-1]:,.0f} msg/s",
                              flush=True)  # fmt: skip
                med: dict[str, float] = {k: statistics.median(v) for k, v in rates.items()}
                for name in cases:
                    rows.append([kind, name, f"{med[name]:,.0f}",
                                 ratio(med[name], med["loop of send"]),
                                 ratio(med[name], med["official SDK loop"])])  # fmt: skip
                target = med["Mailer.send_many"] >= 10 * med["loop of send"]
                print(f"  {kind}: send_many >= 10x loop of send: {'MET' if target else 'NOT MET'}")
    finally:
        stop(fake)
    print()
    print(table(["ESP", "case", "msg/s", "vs loop of send", "vs SDK loop"], rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--loop-count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--esps", default="postmark,resend,mailtrap,mailersend,mandrill")
    args = parser.parse_args(argv)
    run(args.count, args.loop_count, args.rounds, args.delay_ms, args.esps.split(","))


if __name__ == "__main__":
    main()
