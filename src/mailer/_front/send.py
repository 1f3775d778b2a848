"""The send path's steps around routing: before it, the suppression check and a
template's local rendering; after it, what a send that ended without a delivery error
means for delivery.

They are the Mailer's (:mod:`mailer._mailer`), taken out of the class so that it holds
one concept, the front end's order of steps; each takes the parts it reads as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from .._errors import (
    DeliveryError,
    DeliveryUncertain,
    MailerError,
    MessageError,
    RecipientsSuppressed,
    TransientError,
)
from .._events import Suppression
from .._log import get_logger
from .._message import Message
from .._message.template import with_variant
from .._provider import Provider
from .._routing.runtime import SendContext
from .._templates import LocalTemplates
from .._unsubscribe import UnsubscribeConfig
from .._unsubscribe.headers import list_of, suppressed_for

log = get_logger("mailer")


async def check_suppression(
    msg: Message, check: bool, suppression: Suppression, unsubscribe: UnsubscribeConfig | None
) -> dict[str, str]:
    """The recipients to leave out; RecipientsSuppressed when that is all of them."""
    if not check:
        log.warning(
            "suppression list bypassed for %s (send(suppression=False))",
            msg.message_id,
            extra={"event": "suppression_bypass", "message_id": msg.message_id},
        )
        return {}
    if not suppression.config.check:
        return {}
    if suppression.due():
        await suppression.ready()
    hit = suppression.check_message(msg)
    if hit:  # an unsubscribe from one list stops that list only
        list_name = list_of(msg, unsubscribe)
        hit = {a: why for a, why in hit.items() if suppressed_for(why, list_name)}
    if not hit:
        return {}
    if len(hit) == len(msg.envelope_recipients):
        raise RecipientsSuppressed(
            f"every recipient is on the suppression list ({len(hit)}): nothing sent; "
            "send(suppression=False) bypasses the list",
            suppressed=hit,
        )
    log.info(
        "%d recipient(s) of %s left out: on the suppression list",
        len(hit),
        msg.message_id,
        extra={"event": "suppressed", "message_id": msg.message_id, "count": len(hit)},
    )
    return hit


def render_template(
    msg: Message, templates: LocalTemplates | None, leaves: Sequence[Provider]
) -> None:
    """Render ``msg``'s template locally once, before any I/O, and attach the result.

    Rendered whenever local templates are configured, even when the first provider
    has a stored template of its own: a missing variable is then an error now, not
    after a failover, and the variant is ready for any provider without a mapping.
    Without local templates every provider that may send (``leaves``) must have a mapping.
    """
    name = msg.template
    assert name is not None
    if templates is None:
        unmapped = [leaf.name for leaf in leaves if leaf.template_id(name) is None]
        if unmapped:
            raise MessageError(
                f"template {name!r}: provider(s) {', '.join(map(repr, unmapped))} have "
                "no stored template of that name, and the Mailer has no local "
                "templates (templates.dir) to render it"
            )
        return
    rendered = templates.render(name, dict(msg.template_data))
    with_variant(msg, rendered.subject, rendered.text, rendered.html)


def ending_error(exc: BaseException, ctx: SendContext) -> DeliveryError:
    """The error a "failed" event reports for a send that ended without one: the
    error itself when it is a delivery error, else what the end means for delivery."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, MailerError):  # a message or config problem found mid-send
        return DeliveryError(f"not sent: {exc}")
    cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
    what = "cancelled" if cancelled else f"ended by {type(exc).__name__}"
    maybe = [a for a in ctx.attempts if a.possibly_delivered]
    if any(a.committed is not None for a in maybe):
        return DeliveryUncertain(
            f"the send was {what} after a commit point: it may have been delivered"
        )
    if maybe:
        return DeliveryUncertain(
            f"the send was {what} during an attempt at a provider that reports no commit "
            "point: it may have been delivered"
        )
    return TransientError(f"the send was {what} before any commit point: not sent")
