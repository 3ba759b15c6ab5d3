"""Helpers to configure and run the hub in tests: fast timers, TOML files for subprocesses, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imex.config import Config, load
from imex.dicom.part10 import encode_dataset  # noqa: F401  (re-exported for the tests)
from peers import free_port, wait_port

FAST = {
    "dicom.host": "127.0.0.1",
    "http.host": "127.0.0.1",
    "routing.stable_seconds": 0.5,
    "routing.scan_interval": 0.1,
    "delivery.retry_initial_seconds": 0.5,
    "delivery.retry_multiplier": 2.0,
    "delivery.retry_max_seconds": 2.0,
    "delivery.max_attempts": 5,
    "delivery.lease_seconds": 3.0,
    "delivery.poll_interval": 0.05,
    "store.fsync": False,
    "dicom.dimse_timeout": 20.0,
}


def fast_config(data_dir: Path, rules: list[dict] | None = None, **overrides: Any) -> Config:
    values = dict(FAST)
    values["data_dir"] = str(data_dir)
    values["dicom.port"] = free_port()
    values["http.port"] = free_port()
    values["hl7.port"] = free_port()
    values["hl7.host"] = "127.0.0.1"
    for key, value in overrides.items():
        values[key.replace("__", ".")] = value
    config = load(path=None, env={})
    config = config.with_values(**{k.replace(".", "__"): v for k, v in values.items()})
    config.rules = list(rules or [])
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(
    path: Path,
    config: Config,
    *,
    institutions: list[dict] = (),
    nodes: list[dict] = (),
    rules: list[dict] | None = None,
) -> Path:
    """An imex.toml holding the config's settings and the given directory and rules."""
    sections: dict[str, list[str]] = {}
    top: list[str] = []
    for key, value in config.values.items():
        if "." in key:
            section, name = key.split(".", 1)
            sections.setdefault(section, []).append(f"{name} = {_toml_value(value)}")
        else:
            top.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(top) + "\n"
    for section, lines in sections.items():
        text += f"\n[{section}]\n" + "\n".join(lines) + "\n"
    for table, entries in (("institutions", institutions), ("nodes", nodes), ("rules", rules or config.rules)):
        for entry in entries:
            text += f"\n[[{table}]]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in entry.items()) + "\n"
    path.write_text(text)
    return path


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, message: str = "condition"
) -> Any:
    """Poll until predicate() is truthy; returns its value or fails the test with `message`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


class HubProcess:
    """`imex serve` as a real subprocess, so tests can kill -9 it."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = load(config_path, env={})

    def start(self, timeout: float = 30.0) -> HubProcess:
        env = dict(os.environ)
        env.pop("IMEX_CONFIG", None)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imex.cli", "--config", str(self.config_path), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_port(self.config["dicom.port"], timeout=timeout)
        except Exception:
            raise AssertionError(f"imex serve did not start:\n{self.log_path.read_text()[-3000:]}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def register_hospitals(
    hub: Any, *, dest_port: int, dest_aet: str = "RYJPACS", source_aet: str = "STORESCU", source_host: str = "127.0.0.1"
) -> None:
    """Two hospitals: King's (RJZ) sends from `source_aet`, Imperial (RYJ) receives at `dest_aet`."""
    from imex.directory import add_institution, add_node

    add_institution(hub.db, "RJZ", "King's College Hospital", contact_email="pacs@kings.test")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare", contact_email="pacs@imperial.test")
    add_node(hub.db, "KINGS_PACS", source_aet, source_host, 11112, "RJZ", destination=False)
    add_node(hub.db, "IMPERIAL_PACS", dest_aet, "127.0.0.1", dest_port, "RYJ")
    hub.nodes.invalidate()


def transfer_states(hub: Any) -> list[tuple[str, int, int]]:
    """(state, instances_sent, instances_total) of every transfer, oldest first."""
    from sqlalchemy import select

    from imex.db.models import Transfer

    with hub.db.session() as s:
        return [
            (t.state, t.instances_sent, t.instances_total) for t in s.scalars(select(Transfer).order_by(Transfer.id))
        ]


def sop_uids(paths: Any) -> list[str]:
    """SOP Instance UIDs of DICOM files, sorted."""
    from pydicom import dcmread

    return sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths)
