"""Flow 2, image requests: a clinician at one institution asks another for a patient's images; the
request's lifecycle, the matching of arriving studies to it, and its expiry."""
