"""Exchange workflows: transactions (studies sent together, with a message thread and attachments),
durable retrievals (C-MOVEs the hub asks of an institution's PACS) and the router hook that routes
arriving studies to the transaction they belong to."""
