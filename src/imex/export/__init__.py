"""A study as a DICOM file-set (a DICOMDIR and the instances exactly as stored), streamed as a zip or
written to a folder, for systems and people that cannot receive DICOM over the network."""

from imex.export.dicomdir import Member, build_dicomdir
from imex.export.zipstream import stream_zip, study_members, write_folder, write_zip

__all__ = ["Member", "build_dicomdir", "stream_zip", "study_members", "write_folder", "write_zip"]
