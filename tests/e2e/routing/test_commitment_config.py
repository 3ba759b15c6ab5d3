"""Configuring confirmed delivery (CLI, TOML, the admin nodes API and page), what operators see of it
(worklist filter, CSV export), and a destination that never reports, which ends in a clear error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

import peers
from hubtools import register_hospitals, wait_until, write_toml
from imex.cli import main
from imex.db.models import Institution, Node, Transfer
from imex.directory import DirectoryError, add_node, find_node, load_from_config
from imex.samples import make_study
from portaltools import add_user, browser


def _confirm_of(hub, name: str) -> str:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return s.scalar(select(Node.confirm).where(Node.name == name))


def test_cli_and_toml_set_the_confirm_method(make_config, start_hub, tmp_path):
    config = make_config()
    toml = write_toml(tmp_path / "imex.toml", config)
    run = CliRunner()

    def imex(*args: str):  # type: ignore[no-untyped-def]
        return run.invoke(main, ["--config", str(toml), *args], env={"IMEX_CONFIG": None})

    assert imex("institution", "add", "RYJ", "Imperial").exit_code == 0
    made = imex(
        "node",
        "add",
        "IMP",
        "--ae",
        "IMPPACS",
        "--host",
        "127.0.0.1",
        "--port",
        "104",
        "--institution",
        "RYJ",
        "--confirm",
        "count",
    )
    assert made.exit_code == 0 and "delivery confirmed by count" in made.output
    bad = imex(
        "node",
        "add",
        "IMP",
        "--ae",
        "IMPPACS",
        "--host",
        "127.0.0.1",
        "--port",
        "104",
        "--institution",
        "RYJ",
        "--update",
        "--confirm",
        "maybe",
    )
    assert bad.exit_code == 2 and "maybe" in bad.output and "Traceback" not in bad.output
    hub = start_hub(config)
    assert _confirm_of(hub, "IMP") == "count"
    load_from_config(
        hub.db,
        [],
        [
            {
                "name": "IMP",
                "ae_title": "IMPPACS",
                "host": "127.0.0.1",
                "port": 104,
                "institution": "RYJ",
                "confirm": "commitment",
                "allow_get": False,
            }
        ],
    )
    assert _confirm_of(hub, "IMP") == "commitment"
    # an institution whose staff sign in through their provider only, declared in the file
    load_from_config(hub.db, [{"ods": "RYJ", "name": "Imperial", "local_passwords": False}], [])
    with hub.db.sessions() as s:
        assert s.scalar(select(Institution.local_passwords).where(Institution.ods_code == "RYJ")) is False
    imp = find_node(hub.db, "IMP")
    assert imp is not None and (imp.allow_find, imp.allow_move, imp.allow_get) == (True, True, False)
    with pytest.raises(DirectoryError, match="confirm must be one of none, commitment, count"):
        load_from_config(
            hub.db,
            [],
            [
                {
                    "name": "IMP",
                    "ae_title": "IMPPACS",
                    "host": "127.0.0.1",
                    "port": 104,
                    "institution": "RYJ",
                    "confirm": "sometimes",
                }
            ],
        )
    assert _confirm_of(hub, "IMP") == "commitment"


def test_admin_api_and_page_set_the_confirm_method(make_config, start_hub, tmp_path):
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=peers.free_port())
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    admin = browser(hub, "kings_admin")
    node = {"name": "KINGS_WS", "ae_title": "KINGSWS", "host": "127.0.0.1", "port": 104}
    assert admin.post("/api/v1/nodes", json={**node, "confirm": "always"}).status_code == 422
    made = admin.post("/api/v1/nodes", json={**node, "confirm": "commitment"})
    assert made.status_code == 201 and made.json()["confirm"] == "commitment"
    qr = ("allow_find", "allow_move", "allow_get")  # query/retrieve by the node on the hub: allowed by default
    assert [made.json()[k] for k in qr] == [True, True, True]
    changed = admin.put(
        f"/api/v1/nodes/{made.json()['id']}",
        json={**node, "confirm": "count", "allow_move": False, "allow_get": False},
    )
    assert changed.status_code == 200 and changed.json()["confirm"] == "count"
    assert [changed.json()[k] for k in qr] == [True, False, False]
    assert _confirm_of(hub, "KINGS_WS") == "count"
    ws = find_node(hub.db, "KINGS_WS")
    assert ws is not None and (ws.allow_find, ws.allow_move, ws.allow_get) == (True, False, False)
    listed = {n["name"]: n for n in admin.get("/api/v1/nodes").json()}
    assert listed["KINGS_WS"]["allow_find"] is True and listed["KINGS_WS"]["allow_get"] is False
    # another institution's node cannot be changed through the API: not visible, 404
    with hub.db.session() as s:
        imperial = s.scalar(select(Node.id).where(Node.name == "IMPERIAL_PACS"))
    other = {"name": "IMPERIAL_PACS", "ae_title": "RYJPACS", "host": "127.0.0.1", "port": 104, "confirm": "none"}
    assert admin.put(f"/api/v1/nodes/{imperial}", json=other).status_code == 404
    page = admin.get("/admin/nodes")
    assert page.status_code == 200 and '<select name="confirm">' in page.text and "<td>count</td>" in page.text
    assert "<th>Q/R by node</th>" in page.text and "<td>find</td>" in page.text
    assert '<input name="allow_get" type="checkbox" checked>' in page.text


def test_confirmed_transfers_in_the_worklist_filter_and_csv(make_config, start_hub, commitment_peer, tmp_path):
    config = make_config(confirm__scan_interval=0.2)
    peer = commitment_peer(mode="same")
    hub = start_hub(config)
    register_hospitals(hub, dest_port=peer.port)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", peer.port, "RYJ", update=True, confirm="commitment")
    hub.nodes.invalidate()
    add_user(hub, "imperial_rad", "RYJ", ["viewer"])
    assert (
        peers.storescu(make_study(tmp_path / "s", instances_per_series=2), hub.listener.port, "RYJ").statuses == [0] * 2
    )

    def state() -> str:
        with hub.db.session() as s:
            return s.scalar(select(Transfer.state))

    wait_until(lambda: state() == "confirmed", message="confirmed")
    rad = browser(hub, "imperial_rad")
    assert rad.get("/api/v1/transfers", params={"state": "confirmed"}).json()["total"] == 1
    assert rad.get("/api/v1/transfers", params={"state": "delivered"}).json()["total"] == 0
    assert rad.get("/api/v1/transfers", params={"state": "confirmedx"}).status_code == 422
    csv = rad.get("/api/v1/transfers/export").text.splitlines()
    header = csv[0].split(",")
    row = csv[1].split(",")
    assert row[header.index("state")] == "confirmed" and row[header.index("confirmed_at")]
    assert 'imex_transfers{state="confirmed"} 1' in rad.get("/metrics").text
    page = rad.get(f"/transfers/{rad.get('/api/v1/transfers').json()['items'][0]['id']}")
    assert "state-confirmed" in page.text and "the destination holds every image" in page.text


def test_destination_that_never_reports_fails_with_a_clear_error(make_config, start_hub, commitment_peer, tmp_path):
    _never_reports(make_config, start_hub, commitment_peer, tmp_path, {})


def test_never_reports_on_postgres(postgres_url, make_config, start_hub, commitment_peer, tmp_path):
    _never_reports(make_config, start_hub, commitment_peer, tmp_path, {"database__url": postgres_url})


def _never_reports(make_config, start_hub, commitment_peer, tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    config = make_config(
        confirm__wait_seconds=0.3,
        confirm__timeout_seconds=0.5,
        confirm__max_asks=2,
        confirm__scan_interval=0.1,
        **settings,
    )
    peer = commitment_peer(mode="new", silent=100, hub=(config["dicom.ae_title"], "127.0.0.1", config["dicom.port"]))
    hub = start_hub(config)
    register_hospitals(hub, dest_port=peer.port)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", peer.port, "RYJ", update=True, confirm="commitment")
    hub.nodes.invalidate()
    assert peers.storescu(make_study(tmp_path / "s", instances_per_series=1), hub.listener.port, "RYJ").statuses == [0]

    def state() -> str:
        with hub.db.session() as s:
            return s.scalar(select(Transfer.state))

    wait_until(lambda: state() == "failed", message="failed after unanswered requests")
    with hub.db.session() as s:
        t = s.scalar(select(Transfer))
        assert "RYJPACS@127.0.0.1" in t.last_error and "did not confirm delivery after 2 request(s)" in t.last_error
        assert "no Storage Commitment report within" in t.last_error
    assert len(peer.actions) == 2 and peer.actions[0][0] != peer.actions[1][0]
