"""GET /healthz and GET /metrics on a running hub, after real traffic."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import Instance
from imex.samples import make_study


def test_health_and_metrics_reflect_traffic(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    base = f"http://127.0.0.1:{hub.config['http.port']}"

    health = httpx.get(f"{base}/healthz")
    assert health.status_code == 200
    assert health.json()["checks"] == {"database": "ok", "dicom": "ok", "store": "ok"}

    def scrape() -> dict[str, float]:
        text = httpx.get(f"{base}/metrics").text
        return {
            k: float(v)
            for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        }

    before = scrape()  # counters are per process: other tests in this process count too
    files = make_study(tmp_path / "s", instances_per_series=3)
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery")

    after = scrape()

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert delta('imex_instances_received_total{outcome="new"}') == 3
    assert delta("imex_instances_sent_total") == 3
    with hub.db.session() as s:
        stored_bytes = s.scalar(select(func.sum(Instance.size)))
    assert delta("imex_bytes_sent_total") == stored_bytes > 0
    assert after['imex_transfers{state="delivered"}'] == 1  # from this hub's database
    assert after['imex_jobs{queue="delivery",state="delivered"}'] == 1  # every durable queue, by state
    assert after['imex_jobs_due{queue="delivery"}'] == 0 and after['imex_jobs_dead{queue="email"}'] == 0
    assert delta("imex_delivery_latency_seconds_count") == 1


def test_health_reports_a_stopped_listener(make_config, start_hub):
    hub = start_hub(make_config())
    hub.listener.stop()
    response = httpx.get(f"http://127.0.0.1:{hub.config['http.port']}/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["dicom"] == "stopped"
