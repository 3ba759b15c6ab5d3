"""HL7 v2 as a protocol: MLLP framing (listener and client), parsing and building messages. What
happens to a report is the reports flow (imex.reports)."""
