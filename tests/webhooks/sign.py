"""Sign test posts exactly as each ESP signs its own (their documented algorithms)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


class SendGridSigner:
    """A P-256 key pair: ``public_key`` as SendGrid's settings page shows it."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        signature = self.private.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
            "Content-Type": "application/json",
        }


def mailgun_signature(signing_key: str, timestamp: int) -> dict[str, str]:
    """Mailgun's ``signature`` object: HMAC-SHA256(key, timestamp + token), hex."""
    token = secrets.token_hex(25)
    digest = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return {"timestamp": str(timestamp), "token": token, "signature": digest.hexdigest()}


def svix_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Svix (Resend): base64 HMAC-SHA256 of ``id.timestamp.body`` keyed with the
    base64-decoded part of ``whsec_...``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return {"svix-id": msg_id, "svix-timestamp": str(timestamp),
            "svix-signature": f"v1,{signature}", "Content-Type": "application/json"}  # fmt: skip


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


class SNSSigner:
    """A self-signed RSA certificate standing in for SNS's, and messages signed with it
    as SNS signs them (SignatureVersion 1: SHA-1, 2: SHA-256, PKCS#1 v1.5)."""

    CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"

    def __init__(self) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.private.public_key()).serial_number(1)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(self.private, hashes.SHA256()))  # fmt: skip
        self.pem = cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: dict[str, str], version: str = "2") -> dict[str, str]:
        from cryptography.hazmat.primitives.asymmetric import padding

        message = {**message, "SignatureVersion": version, "SigningCertURL": self.CERT_URL}
        # AWS's documented canonical string, written out here independently of ours
        if message["Type"] == "Notification":
            keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                    "Type"]  # fmt: skip
        text = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 -- SNS v1
        signature = self.private.sign(text.encode(), padding.PKCS1v15(), digest)
        return {**message, "Signature": base64.b64encode(signature).decode()}
