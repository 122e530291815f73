#!/usr/bin/env python3
"""Prints the three Standard Webhooks headers for a body file, signed now by the official
`standardwebhooks` package (make run installs it under .tools/python), one per line, as
`curl -H @-` reads them:

  python3 dev/standard-webhooks-sign.py dev/sample-acme.json \
    | curl -sS http://127.0.0.1:8080/webhooks/acme -H @- --data-binary @dev/sample-acme.json

Usage: python3 dev/standard-webhooks-sign.py BODY_FILE [MSG_ID [SECRET]]
The message id defaults to msg_hookline_sample_0001 (send it twice: a duplicate), the
secret to $ACME_WEBHOOK_SECRET, then to dev/edge.toml's development secret.
"""
import os
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".tools", "python"))
from standardwebhooks import Webhook  # noqa: E402

DEV_SECRET = "whsec_aG9va2xpbmUtZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ="

body = open(sys.argv[1], "rb").read().decode()
msg_id = sys.argv[2] if len(sys.argv) > 2 else "msg_hookline_sample_0001"
secret = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("ACME_WEBHOOK_SECRET", DEV_SECRET)
now = datetime.now(tz=timezone.utc).replace(microsecond=0)
print(f"webhook-id: {msg_id}")
print(f"webhook-timestamp: {int(now.timestamp())}")
print(f"webhook-signature: {Webhook(secret).sign(msg_id, now, body)}")
