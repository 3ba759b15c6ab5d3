"""De-identification for teaching and research destinations: the PS3.15 Basic Application Level
Confidentiality Profile (Annex E), with one pseudonym per patient that stays the same across studies.

The pseudonym and the new UIDs come from a keyed hash, so the hub keeps no table linking them to the
patient and only a holder of the key could re-link them. Text burnt into pixels is not touched: a
destination that needs that must not receive such series (e.g. screen captures).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imex.harmonise.uids import walk_uids

# Attributes the basic profile removes (action X), by keyword.
REMOVE = (
    "AcquisitionComments",
    "AcquisitionDeviceProcessingDescription",
    "AcquisitionProtocolDescription",
    "ActualHumanPerformersSequence",
    "AdditionalPatientHistory",
    "AdmissionID",
    "AdmittingDate",
    "AdmittingDiagnosesCodeSequence",
    "AdmittingDiagnosesDescription",
    "AdmittingTime",
    "Allergies",
    "Arbitrary",
    "AuthorObserverSequence",
    "BranchOfService",
    "CommentsOnThePerformedProcedureStep",
    "ConfidentialityConstraintOnPatientDataDescription",
    "ContentSequence",
    "CountryOfResidence",
    "CurrentPatientLocation",
    "CustodialOrganizationSequence",
    "DerivationDescription",
    "DeviceSerialNumber",
    "DischargeDiagnosisDescription",
    "DistributionAddress",
    "DistributionName",
    "EthnicGroup",
    "FrameComments",
    "GraphicAnnotationSequence",
    "HumanPerformerName",
    "HumanPerformerOrganization",
    "IconImageSequence",
    "IdentifyingComments",
    "ImageComments",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionName",
    "InsurancePlanIdentification",
    "IntendedRecipientsOfResultsIdentificationSequence",
    "InterpretationApproverSequence",
    "InterpretationAuthor",
    "InterpretationDiagnosisDescription",
    "InterpretationRecorder",
    "InterpretationText",
    "InterpretationTranscriber",
    "IssuerOfAdmissionID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "LastMenstrualDate",
    "MedicalAlerts",
    "MedicalRecordLocator",
    "MilitaryRank",
    "ModifiedImageDescription",
    "NameOfPhysiciansReadingStudy",
    "NamesOfIntendedRecipientsOfResults",
    "Occupation",
    "OperatorsName",
    "OrderCallbackPhoneNumber",
    "OrderEnteredBy",
    "OrderEntererLocation",
    "OriginalAttributesSequence",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "ParticipantSequence",
    "PatientAddress",
    "PatientAge",
    "PatientBirthName",
    "PatientBirthTime",
    "PatientComments",
    "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName",
    "PatientPrimaryLanguageCodeSequence",
    "PatientReligiousPreference",
    "PatientSize",
    "PatientState",
    "PatientTelephoneNumbers",
    "PatientTransportArrangements",
    "PatientWeight",
    "PerformedLocation",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime",
    "PerformedStationAETitle",
    "PerformedStationName",
    "PerformingPhysicianIdentificationSequence",
    "PerformingPhysicianName",
    "PersonAddress",
    "PersonName",
    "PersonTelephoneNumbers",
    "PhysicianApprovingInterpretation",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence",
    "PreMedication",
    "PregnancyStatus",
    "ReasonForStudy",
    "ReasonForTheImagingServiceRequest",
    "ReferencedPatientAliasSequence",
    "ReferencedPatientPhotoSequence",
    "ReferencedPatientSequence",
    "ReferencedPerformedProcedureStepSequence",
    "ReferencedStudySequence",
    "ReferringPhysicianAddress",
    "ReferringPhysicianIdentificationSequence",
    "ReferringPhysicianTelephoneNumbers",
    "RegionOfResidence",
    "RequestAttributesSequence",
    "RequestedContrastAgent",
    "RequestedProcedureComments",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "RequestedProcedureLocation",
    "RequestingPhysician",
    "RequestingService",
    "ResponsibleOrganization",
    "ResponsiblePerson",
    "ResultsComments",
    "ResultsDistributionListSequence",
    "ResultsIDIssuer",
    "ScheduledHumanPerformersSequence",
    "ScheduledPatientInstitutionResidence",
    "ScheduledPerformingPhysicianIdentificationSequence",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledStationAETitle",
    "ScheduledStationName",
    "SeriesDescription",
    "ServiceEpisodeDescription",
    "ServiceEpisodeID",
    "SmokingStatus",
    "SpecialNeeds",
    "StationName",
    "StudyComments",
    "StudyDescription",
    "TextComments",
    "TopicAuthor",
    "TopicKeywords",
    "TopicSubject",
    "TopicTitle",
    "VerifyingObserverIdentificationCodeSequence",
    "VerifyingObserverName",
    "VerifyingObserverSequence",
    "VerifyingOrganization",
    "VisitComments",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "SeriesDate",
    "SeriesTime",
    "OverlayDate",
    "OverlayTime",
    "CurveDate",
    "CurveTime",
    "DataSetTrailingPadding",
)
# Attributes the profile empties (action Z, or D where an empty value is a valid dummy), kept because
# their modules need them present.
EMPTY = (
    "AccessionNumber",
    "ContentCreatorName",
    "ContentDate",
    "ContentTime",
    "FillerOrderNumberImagingServiceRequest",
    "PatientBirthDate",
    "PatientSex",
    "PlacerOrderNumberImagingServiceRequest",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyID",
    "StudyTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
)
METHOD = "PS3.15 Basic Application Level Confidentiality Profile (imex)"


def pseudonym(key: bytes, identity: str) -> str:
    """A stable pseudonym for a patient identity (an NHS number, or an institution and local ID)."""
    return "IMEX" + hmac.new(key, f"patient\x00{identity}".encode(), hashlib.sha256).hexdigest()[:16].upper()


def _strip(ds: Dataset) -> None:
    """Remove private attributes, overlay data and comments, and the listed attributes, at every level."""
    for elem in list(ds):
        group, element = elem.tag.group, elem.tag.element
        if elem.tag.is_private or (0x6000 <= group <= 0x60FF and element in (0x3000, 0x4000)):
            del ds[elem.tag]
        elif elem.VR == "SQ":
            for item in elem.value or []:
                _strip(item)
    for keyword in REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in EMPTY:
        if keyword in ds:
            ds[keyword].value = None


def basic_profile(ds: Dataset, patient_pseudonym: str, replace_uid: Callable[[str], str]) -> None:
    """De-identify `ds` in place: identifying attributes removed or emptied, the patient named by the
    pseudonym, every instance UID replaced consistently."""
    _strip(ds)
    ds.PatientID = patient_pseudonym
    ds.PatientName = patient_pseudonym
    walk_uids(ds, replace_uid)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
