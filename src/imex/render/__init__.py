"""Decoding stored instances and rendering their frames to PNG or JPEG with windowing, for the viewer and
the DICOMweb rendered and thumbnail resources."""
