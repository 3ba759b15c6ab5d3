"""`imex harmonise ...` and rules in imex.toml, against a real `imex serve` process and dcmtk peers:
a study without an NHS number is held, previewed, reconciled from the command line and then delivered;
a hub with a bad rule refuses to start and says which rule and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from pydicom import dcmread

import peers
from hubtools import _toml_value, wait_until, write_toml
from imex.cli import main
from imex.samples import make_study

IMEX = Path(sys.executable).with_name("imex")
RULE = {
    "name": "Imperial files by NHS number",
    "destination": ["RYJ"],
    "nhs_number": "require",
    "accession_prefix": "{source_ods}-",
}


def _write(path: Path, config, dest_port: int, rules: list[dict]) -> Path:  # type: ignore[no-untyped-def]
    write_toml(
        path,
        config,
        institutions=[
            {"ods": "RJZ", "name": "King's College Hospital"},
            {"ods": "RYJ", "name": "Imperial College Healthcare"},
        ],
        nodes=[
            {
                "name": "KINGS_PACS",
                "ae_title": "STORESCU",
                "host": "127.0.0.1",
                "port": 11112,
                "institution": "RJZ",
                "destination": False,
            },
            {
                "name": "IMPERIAL_PACS",
                "ae_title": "RYJPACS",
                "host": "127.0.0.1",
                "port": dest_port,
                "institution": "RYJ",
            },
        ],
    )
    with path.open("a") as f:
        for rule in rules:
            f.write("\n[[harmonise]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in rule.items()))
    return path


def _imex(toml: Path, *args: object) -> str:
    result = CliRunner().invoke(main, ["--config", str(toml), *map(str, args)], env={"IMEX_CONFIG": None})
    assert result.exit_code == 0, f"imex {args} failed:\n{result.output}\n{result.exc_info}"
    return result.output


def test_held_preview_reconcile_from_the_command_line(make_config, hub_process, storescp, tmp_path):
    dest = storescp("RYJPACS")
    config = make_config()
    toml = _write(tmp_path / "imex.toml", config, dest.port, [RULE])
    hub = hub_process(toml)
    files = make_study(tmp_path / "s", instances_per_series=2, patient_id="LOCAL42", accession="A1")
    study_uid = dcmread(files[0]).StudyInstanceUID

    assert peers.storescu(files, hub.config["dicom.port"], "RYJ", "STORESCU").statuses == [0, 0]

    listing = wait_until(
        lambda: (out := _imex(toml, "transfers", "list", "--state", "held")).count("held") and out,
        message="a held transfer",
    )
    transfer_id = int(listing.splitlines()[1].split()[0])
    held = _imex(toml, "harmonise", "held")
    assert f"transfer {transfer_id}: RJZ -> IMPERIAL_PACS (RYJ)" in held and "no NHS number" in held
    preview = _imex(toml, "harmonise", "preview", study_uid, "--to", "RYJ")
    assert "would be HELD" in preview
    assert "AccessionNumber  'A1'  ->  'RJZ-A1'" in preview
    assert dest.files() == []

    _imex(toml, "harmonise", "reconcile", transfer_id, "--patient-id", "943 476 5919", "--actor", "guardian")

    received = [dcmread(p) for p in dest.wait_for(2)]
    assert {(ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber) for ds in received} == {
        ("9434765919", "NHS", "RJZ-A1")
    }
    assert {ds.OtherPatientIDsSequence[0].PatientID for ds in received} == {"LOCAL42"}
    after = _imex(toml, "harmonise", "preview", study_uid, "--to", "IMPERIAL_PACS")
    assert "HELD" not in after and "PatientID" in after and "'LOCAL42'  ->  '9434765919'" in after
    shown = _imex(toml, "transfers", "show", transfer_id)
    assert "held" in shown and "reconciled" in shown and "guardian" in shown


def test_bad_rule_stops_start_up_naming_rule_and_line(make_config, tmp_path):
    config = make_config()
    toml = _write(
        tmp_path / "imex.toml",
        config,
        104,
        [RULE, {"name": "Blank the wrong thing", "destination": ["RYJ"], "blank": ["PatientNmae"]}],
    )
    line = next(i for i, text in enumerate(toml.read_text().splitlines(), 1) if text.startswith("blank ="))
    env = {k: v for k, v in os.environ.items() if k != "IMEX_CONFIG"}

    for args in (["harmonise", "check"], ["serve"]):
        run = subprocess.run(
            [str(IMEX), "--config", str(toml), *args], capture_output=True, text=True, env=env, timeout=60
        )
        assert run.returncode != 0
        assert (
            f"imex.toml:{line}: harmonise rule 2 ('Blank the wrong thing'): blank: unknown attribute "
            f"'PatientNmae'" in run.stderr
        ), run.stderr
        assert "Traceback" not in run.stderr
