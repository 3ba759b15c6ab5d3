"""Retention: every study the hub holds has an expiry, and a job deletes what has expired, leaving a
tombstone and the audit trail. The hub is an exchange, not an archive: keeping patient data longer than
the exchange needs is an information-governance risk."""
