"""Notifications: e-mail alerts (and, with the portal, in-app ones)."""
