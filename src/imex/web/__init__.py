"""HTTP: health and metrics now; the portal, API and DICOMweb build on this app."""
