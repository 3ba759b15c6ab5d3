"""Flow 3, pre-authorised exchanges (transactions): studies sent together from one institution to
another, with a message thread and attachments, the durable retrievals (C-MOVEs the hub asks of an
institution's PACS) and the router hook that routes arriving studies to the exchange they belong to."""
