"""Flow 4, reports: HL7 ORU^R01 received and matched to studies, forwarded with the images (HL7 to the
destination's RIS, DICOM SR or encapsulated PDF to its PACS), and asked of a RIS when missing."""
