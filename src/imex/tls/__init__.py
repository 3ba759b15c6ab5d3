"""Secure transport: a small certificate authority per deployment (ca.py), the TLS profile every
listener and sender uses (profile.py), and the check that warns admins before certificates expire
(expiry.py)."""
