"""Query/Retrieve from the hub: a registered node (a PACS workstation) searches what its institution may
see with C-FIND and pulls it with C-MOVE or C-GET, as it would from any archive."""
