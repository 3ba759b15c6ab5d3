"""DICOM networking: the hub's listener (SCP), its sender (SCU) and what they share."""
