"""Accounts and access: passwords, the second factor, sessions and API tokens, roles and permissions."""
