"""Links to one study for recipients outside the network: created by a permitted user for one e-mail
address, opened with a one-time code sent to that address, expiring, revocable and audited at every use."""
