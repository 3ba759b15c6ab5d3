"""Sharing folders (as London's PACS Exchange shared studies): an emergency folder every authorised user
of its participating institutions sees, where a study stays 18 hours; elective folders that only their
members see, where it stays 8 days. Being in a folder makes a study visible; it is not a transfer."""
