"""The queues page and API on a running hub: a transfer to a destination that is down is given up, shows
as the delivery queue's dead letter (to system administrators only), and its retry from the page's API
sends it once the destination is back."""

from __future__ import annotations

import peers
from hubtools import register_hospitals, sop_uids, transfer_states, wait_until
from imex.samples import make_study
from portaltools import add_user, browser


def test_dead_transfer_shown_and_retried(make_config, start_hub, storescp, tmp_path):
    port = peers.free_port()
    hub = start_hub(make_config(delivery__max_attempts=1))
    register_hospitals(hub, dest_port=port)  # nothing listens there yet
    add_user(hub, "operator", "RJZ", ["system_admin"])
    add_user(hub, "kingsadmin", "RJZ", ["institution_admin"])
    files = make_study(tmp_path / "s", instances_per_series=2)
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0, 0]
    wait_until(lambda: [s for s, _, _ in transfer_states(hub)] == ["failed"], message="the transfer gives up")

    operator = browser(hub, "operator")
    queues = {q["name"]: q for q in operator.get("/api/v1/jobs").json()}
    assert queues["delivery"]["dead"] == 1 and queues["delivery"]["by_state"] == {"failed": 1}
    [dead] = operator.get("/api/v1/jobs/delivery/dead").json()
    assert dead["attempts"] == 1 and "127.0.0.1" in dead["error"]
    page = operator.get("/admin/jobs")
    assert page.status_code == 200
    assert 'id="dead-delivery"' in page.text and f'data-id="{dead["id"]}"' in page.text
    metrics = operator.get("/metrics").text
    assert 'imex_jobs_dead{queue="delivery"} 1' in metrics

    # an institution's admin sees its own transfers, not the hub's queues
    kings = browser(hub, "kingsadmin")
    assert kings.get("/api/v1/jobs").status_code == 403
    assert kings.get("/admin/jobs").status_code == 403
    assert kings.post(f"/api/v1/jobs/delivery/{dead['id']}/retry").status_code == 403
    assert transfer_states(hub) == [("failed", 0, 2)]

    dest = storescp("RYJPACS", port=port)
    retried = operator.post(f"/api/v1/jobs/delivery/{dead['id']}/retry")
    assert retried.status_code == 200, retried.text
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="the retried transfer")
    assert sorted(dest.sop_uids()) == sop_uids(files)
    again = operator.post(f"/api/v1/jobs/delivery/{dead['id']}/retry")
    assert again.status_code == 409 and "not a dead letter" in again.json()["detail"]
    assert operator.get("/api/v1/jobs/mail/dead").status_code == 404
