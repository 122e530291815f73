#!/usr/bin/env python3
"""Prints a Stripe-Signature header value for a body file, signed now, as Stripe does:
HMAC-SHA256 keyed with the whole endpoint secret over "<t>.<raw body>".

Usage: python3 dev/stripe-sign.py BODY_FILE [SECRET]
The secret defaults to $STRIPE_WEBHOOK_SECRET, then to dev/edge.toml's development secret.
"""
import hashlib
import hmac
import os
import sys
import time

DEV_SECRET = "whsec_hookline_development_only"

body = open(sys.argv[1], "rb").read()
secret = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("STRIPE_WEBHOOK_SECRET", DEV_SECRET)
t = int(time.time())
mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
print(f"t={t},v1={mac}")
