"""`kill -9` of the hub while it stores a sent upload: after the restart the next worker takes the upload
over when the lease runs out, stores the rest, and every instance reaches Imperial's PACS once."""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import func, select

from hubtools import sop_uids, wait_until, write_toml
from imex.db import Database
from imex.db.models import Instance, Upload
from imex.samples import make_study
from peers import wait_port
from portaltools import add_user, bearer
from uploadtools import upload_folder


def test_kill_9_while_storing_an_upload(make_config, hub_process, storescp, tmp_path):
    dest = storescp("RYJPACS")
    config = make_config(delivery__lease_seconds=2.0)
    toml = write_toml(
        tmp_path / "imex.toml",
        config,
        institutions=[
            {"ods": "RJZ", "name": "King's College Hospital"},
            {"ods": "RYJ", "name": "Imperial College Healthcare"},
        ],
        nodes=[
            {
                "name": "IMPERIAL_PACS",
                "ae_title": "RYJPACS",
                "host": "127.0.0.1",
                "port": dest.port,
                "institution": "RYJ",
            }
        ],
    )
    files = make_study(tmp_path / "cd", series=4, instances_per_series=60, rows=256, columns=256)
    proc = hub_process(toml)
    wait_port(config["http.port"], timeout=30)
    db = Database(config.database_url)
    hub = SimpleNamespace(db=db, config=config)  # what the portal helpers need of a hub
    add_user(hub, "kings", "RJZ", ["sender"])
    api = bearer(hub, "kings")
    upload_id = upload_folder(api, tmp_path / "cd")
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["instances"] == len(files)

    def stored() -> int:
        with db.engine.connect() as conn:
            return conn.execute(select(Upload.instances_stored).where(Upload.id == upload_id)).scalar_one()

    assert api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ"}).status_code == 202
    wait_until(lambda: 0 < stored() < len(files), timeout=60, interval=0.01, message="storing under way")
    proc.kill()
    with db.engine.connect() as conn:
        assert conn.execute(select(Upload.state).where(Upload.id == upload_id)).scalar_one() == "sending"
    hub_process(toml, name="hub-restarted")
    wait_port(config["http.port"], timeout=30)

    def state() -> str:
        with db.engine.connect() as conn:
            return conn.execute(select(Upload.state).where(Upload.id == upload_id)).scalar_one()

    wait_until(lambda: state() == "sent", timeout=120, message="the upload stored after the restart")
    assert stored() == len(files)
    received = dest.wait_for(len(files), timeout=120)
    assert len(received) == len(files) and sorted(dest.sop_uids()) == sop_uids(files)
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Instance)).scalar_one() == len(files)
    db.dispose()
