"""The patient imaging locator ("find it"): which institutions hold which studies for an NHS number.

Fed by the studies that pass through the hub (hub_index), by scheduled C-FIND sweeps of participating
institutions' PACS (sweep), and by RIS study notifications over HL7 (notify); searched by NHS number and
date of birth with a stated reason (search), within each institution's discoverability (policy). A study
found elsewhere can be viewed before import (cache) and sourced into the user's own PACS.
"""
