"""Header harmonisation: each destination gets the study with its own identifiers and conventions (patient
ID and issuer, accession number, NHS number, UIDs, de-identification), by the rules in imex.toml."""
