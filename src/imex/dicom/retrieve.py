"""C-MOVE from an institution's PACS to the hub: the PACS sends the study to the hub's own DICOM
listener (the move destination is the hub's AE title, which the PACS must know), where it is stored and
indexed like any pushed study. Used by requests, pre-authorised transfers and view-before-import."""

from __future__ import annotations

from dataclasses import dataclass

from imex.dicom.query import FindFailed, NodeAddress, association, clean


class MoveFailed(FindFailed):
    """The node could not be asked to move, or refused; the message says which and what to do."""


@dataclass(frozen=True)
class MoveOutcome:
    """What the node reported: sub-operations completed, failed and with warnings."""

    status: int
    completed: int
    failed: int
    warning: int

    @property
    def ok(self) -> bool:
        return self.status in (0x0000, 0xB000) and self.failed == 0

    def describe(self) -> str:
        return (
            f"status 0x{self.status:04X}: {self.completed} instances moved, {self.failed} failed, "
            f"{self.warning} with warnings"
        )


_MEANINGS = {
    0xA801: "the node does not know the move destination (add the hub's AE title, host and port to it)",
    0xA701: "the node is out of resources for the move",
    0xA702: "the node is out of resources for the move's sub-operations",
    0xA900: "the node says the request does not match its information model",
    0xC000: "the node could not process the move",
    0xFE00: "the move was cancelled",
}


def move_study(
    hub_aet: str, node: NodeAddress, study_uid: str, destination_aet: str | None = None, timeout: float = 600.0
) -> MoveOutcome:
    """Ask `node` to send study `study_uid` to `destination_aet` (the hub by default); waits for the end."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import uid_to_sop_class

    Model = uid_to_sop_class("1.2.840.10008.5.1.4.1.2.2.2")  # Study Root Query/Retrieve Information Model - MOVE

    uid = clean(study_uid)
    if not uid:
        raise ValueError("a study instance UID is needed")
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    last = None
    counts = {"completed": 0, "failed": 0, "warning": 0}
    try:
        with association(hub_aet, node, Model, timeout) as assoc:
            for status, _identifier in assoc.send_c_move(ds, destination_aet or hub_aet, Model):
                if not status or "Status" not in status:
                    raise MoveFailed(f"{node} stopped answering the move of study {uid}")
                last = int(status.Status)
                for key, keyword in (
                    ("completed", "NumberOfCompletedSuboperations"),
                    ("failed", "NumberOfFailedSuboperations"),
                    ("warning", "NumberOfWarningSuboperations"),
                ):
                    if keyword in status and status.get(keyword) is not None:
                        counts[key] = int(status.get(keyword))
    except MoveFailed:
        raise
    except FindFailed as exc:
        raise MoveFailed(str(exc)) from None
    except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
        raise MoveFailed(f"{node} sent an answer the hub cannot read: {exc}") from None
    if last is None:
        raise MoveFailed(f"{node} did not answer the move of study {uid}")
    outcome = MoveOutcome(last, counts["completed"], counts["failed"], counts["warning"])
    if last not in (0x0000, 0xB000, 0xFF00):
        meaning = _MEANINGS.get(last, "the node refused the move")
        raise MoveFailed(
            f"{node} refused to move study {uid} to {destination_aet or hub_aet}: {meaning} ({outcome.describe()})"
        )
    return outcome
