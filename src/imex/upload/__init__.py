"""Uploads from the browser: a folder, a zip or a patient's CD (with its DICOMDIR) is staged file by file,
reviewed (patients, studies, files that are not DICOM), then stored through the same ingest path as DICOM
arrivals and sent on as one exchange transaction."""
