#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs under fuzz/corpus/<target>/ from the repository's
fixtures (tests/fixtures/, dev/), so that the fuzzer starts from real payloads rather
than from nothing. `make fuzz` runs it first; it only (re)writes files named seed-*, so
what the fuzzer added to a corpus stays.

A delivery is written as the targets read it (edge/src/fuzzing.rs): header lines, an
empty line, the body; `{sig}`, `{v1}` and `{v1a}` in a header value stand for the
signature the target's fixed key makes.
"""

import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
FIXTURES = ROOT / "tests" / "fixtures"
# edge::fuzzing::NOW: the receipt time of every delivery.
NOW = 1767225600
WORKFLOW_TOKEN = "fuzz-only-workflow-token"

STRIPE = sorted((FIXTURES / "stripe").glob("*.json"))
GHL = sorted(
    p for p in (FIXTURES / "gohighlevel" / "fixtures").glob("*.json")
    if not p.name.startswith("workflow-")
)
WORKFLOW = sorted((FIXTURES / "gohighlevel" / "fixtures").glob("workflow-*.json"))
VECTORS = FIXTURES / "gohighlevel" / "test-vectors"
MAPPED = [
    (ROOT / "dev" / "sample-acme.json").read_bytes(),
    b'{"type":"payment.succeeded","timestamp":1767225600,"data":{"id":"user_1",'
    b'"email":"a@example.com","payment_id":"pay_1","amount":"12.50","currency":"EUR"}}',
    b'{"type":"payment.refunded","data":{"email":"a@example.com","refund_id":"re_1",'
    b'"payment_id":"pay_1","amount":500,"currency":"usd"}}',
    b'{"type":"tags.added","data":{"email":"a@example.com","tags":["vip","beta"]}}',
    b'{"type":"appointment.booked","data":{"email":"a@example.com","appointment_id":"ap_1",'
    b'"status":"booked","start":"2026-12-03T10:00:00-05:00","end":"2026-12-03T11:00:00Z"}}',
    b'{"id":"evt_1","email":"b@example.com","user":{"email":"c@example.com",'
    b'"phone":"4155550100"},"order":{"id":"o_1","total":4900,"currency":"usd"},'
    b'"at":"2026-01-01T00:00:00Z"}',
    b'{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7",'
    b'"token":"x"}',
    b'{"event_id":"Ev1","event_time":1767225600,"event":{"type":"team_join",'
    b'"user":{"email":"d@example.com"}}}',
]


def delivery(headers, body):
    head = "".join(f"{name}: {value}\n" for name, value in headers)
    return head.encode() + b"\n" + body


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, value):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(value)) + value


def literals_only_lz4(data):
    """An LZ4 block of one sequence of literals: valid whatever the dictionary."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    rest, extra = n - 15, bytearray()
    while rest >= 255:
        extra.append(255)
        rest -= 255
    extra.append(rest)
    return bytes([0xF0]) + bytes(extra) + data


def edge_seeds():
    for p in STRIPE:
        body = p.read_bytes()
        signed = delivery([("Stripe-Signature", f"t={NOW},v1={{sig}}")], body)
        write("verify_stripe", p.stem, signed)
        write("normalize_stripe", p.stem, body)
    for name, header in [
        ("kat", "t=1767225600,v1=2f585e3b43044fa64c5750b9df5df7481ec78d7bd7cbb64ad508b6214638dbd4"),
        ("rolled", f"t={NOW},v1={'a' * 64},v1={'B' * 64},v0={'c' * 64}"),
        ("odd", "t=00012,v1=,x,=,t"),
    ]:
        write("stripe_header", name, header.encode())

    for p in GHL:
        body = p.read_bytes()
        write("verify_gohighlevel", p.stem, delivery([("X-GHL-Signature", "{sig}")], body))
        write("normalize_gohighlevel", p.stem, body)
    vector = (VECTORS / "AppointmentUpdate-showed.body.json").read_bytes()
    for header, sig in [
        ("X-GHL-Signature", "AppointmentUpdate-showed.x-ghl-signature.txt"),
        ("X-WH-Signature", "AppointmentUpdate-showed.x-wh-signature.txt"),
    ]:
        value = (VECTORS / sig).read_text().strip()
        write("verify_gohighlevel", f"vector-{header}", delivery([(header, value)], vector))

    for p in WORKFLOW:
        body = p.read_bytes()
        bearer = delivery([("Authorization", f"Bearer {WORKFLOW_TOKEN}")], body)
        write("verify_gohighlevel_workflow", p.stem, bearer)
        query = f"?location=x&token={WORKFLOW_TOKEN}\n".encode() + delivery([], body)
        write("verify_gohighlevel_workflow", f"{p.stem}-query", query)
        write("normalize_gohighlevel_workflow", p.stem, body)

    for i, body in enumerate(MAPPED):
        for family, entry in [("webhook", "{v1}"), ("svix", "{v1a}")]:
            headers = [
                (f"{family}-id", f"msg_{i}"),
                (f"{family}-timestamp", str(NOW)),
                (f"{family}-signature", f"v1,AAAA {entry}"),
            ]
            write("verify_standard_webhooks", f"{i}-{family}", delivery(headers, body))
            write("normalize_standard_webhooks", f"{i}-{family}", delivery(headers, body))
        for name, headers in [
            ("github", [("X-Hub-Signature-256", "{sig}"), ("X-GitHub-Event", "push")]),
            ("shopify", [("X-Shopify-Hmac-Sha256", "{sig}"), ("X-Shopify-Topic", "orders/paid")]),
            ("slack", [("X-Slack-Signature", "{sig}"), ("X-Slack-Request-Timestamp", str(NOW))]),
            ("custom", [
                ("X-Fuzz-Signature", "{sig}"),
                ("X-Fuzz-Timestamp", str(NOW)),
                ("X-Fuzz-Id", f"id_{i}"),
                ("X-Fuzz-Event", "order.paid"),
            ]),
        ]:
            write("verify_hmac", f"{i}-{name}", delivery(headers, body))
            write("normalize_hmac", f"{i}-{name}", delivery(headers, body))

    write("config", "dev", (ROOT / "dev" / "edge.toml").read_bytes())
    write("config", "env", b"""[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET", "whsec_rolled"]

[sources.shop]
kind = "hmac"
preset = "shopify"
secrets = ["env:SHOPIFY"]
dedup_window_secs = 60
""")


def contacts_seeds():
    record = json.dumps({
        "d": {
            "email": {"at": 1796421417000, "ev": "stripe:evt_1",
                      "v": {"n": "jenny.rosen@example.com", "o": "Jenny.Rosen@example.com"}},
            "name": {"at": 1796421417000, "ev": "stripe:evt_1", "v": "Jenny Rosen"},
            "payment_refs": ["cs_test_a1", "pi_3M"],
            "first_seen": 1796421417000,
            "last_seen": 1796421417000,
        },
        "log": [[1796421420104, "stripe:evt_1"]],
    }, separators=(",", ":")).encode()
    head = b"2" + b"%016x" % 7
    packed = struct.pack("<I", len(record)) + literals_only_lz4(record)
    write("contact_value", "y", head + b"y" + packed)
    write("contact_value", "z", head + b"z" + packed)
    write("contact_value", "d", head + b"d" + record)
    write("contact_value", "r", head + b"r" + b"ct_0190f0e0c0a07000800000000000000a")

    event = (
        field(2, b"stripe") + field(3, b"customer.created") + varint(4 << 3) + varint(1)
        + field(5, b"ct_0190f0e0c0a07000800000000000000a")
        + field(7, varint(1 << 3) + varint(NOW))
        + field(10, b'{"id":"kept"}') + field(11, b"a note")
        + field(13, field(1, b"webhook-id") + field(2, b"msg_1"))
    )
    write("event_record", "own-id", event)
    write("event_record", "other-id", field(1, b"stripe:evt_other") + event)
    write("done_marker", "d", b"D" + event)
    write("done_marker", "w", b"W1733356800000-3 " + event)
    write("done_marker", "lease", b"L0123456789abcdef")


if __name__ == "__main__":
    edge_seeds()
    contacts_seeds()
