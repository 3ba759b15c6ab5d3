"""The one durable job engine (foundations): every queue of the hub is a table of the domain driven by
imex.jobs.engine (claim, lease, heartbeat, reap, backoff, dead letters), declared as a
imex.jobs.queue.JobQueue and listed in imex.jobs.registry for the operators and /metrics."""
