"""Config changes while the agent runs: signed OTA updates, and reloads of the local file.

One worker thread takes them one at a time. An OTA update goes through every check of
agent/ota/update.py, then its pipeline is built (still nothing changed), then it is committed to
disk (agent/ota/store.py), then hot-swapped into the running agent, then watched for the grace
period (agent/ota/verdict.py): it is confirmed, or the last-known-good comes back. Each update
gets one ack on `{prefix}/{vehicle}/config/ack`. A local reload (SIGHUP, `reload` on the
control socket) takes the same path from "built" on, with the applied update laid over the
new local file again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.config.schema import AgentConfig, load_config
from agent.errors import AgentError, ConfigError
from agent.ota.store import ConfigStore
from agent.ota.update import (
    Reason,
    Trust,
    UpdateRejected,
    check_update,
    delivered_name,
    load_trust,
    open_update,
    stored_config,
)
from agent.ota.verdict import HealthSnapshot, problems

log = logging.getLogger(__name__)

Reply = Callable[[str | None, str], None]  # (error or None, message)


class Prepared(Protocol):
    """A pipeline built for a config, not yet running (agent/runtime/daemon.py's Pipeline)."""

    config: AgentConfig


class Reloadable(Protocol):
    """What the running agent offers (agent/runtime/daemon.py)."""

    @property
    def config(self) -> AgentConfig: ...

    def prepare(self, config: AgentConfig) -> Prepared: ...

    def switch(self, pipeline: Prepared) -> None: ...

    def health_snapshot(self) -> HealthSnapshot: ...

    def publish(self, leaf: str, payload: bytes) -> None: ...


@dataclass(frozen=True)
class _Update:
    envelope: bytes


@dataclass(frozen=True)
class _Reload:
    reply: Reply


def ota_active(config: AgentConfig) -> bool:
    return config.ota.enabled and bool(config.ota.trusted_keys)


def startup_config(local_path: Path, check: Callable[[AgentConfig], object]) -> AgentConfig:
    """The config to start with: the applied update, else the last-known-good, else the local
    file. `check` builds what a config needs (DBCs, plan) and raises when it cannot."""
    local = load_config(local_path)
    if not ota_active(local):
        return local
    store = ConfigStore(local.state.directory)
    trust = load_trust(local)
    for name, envelope in (("applied", store.current()), ("last-known-good", store.previous())):
        if envelope is None:
            continue
        try:
            config = stored_config(envelope, trust, local_config=local_path,
                                   dbc_store=store.dbc_directory)
            check(config)
        except AgentError as exc:
            log.error("config update: the %s update cannot be used (%s); trying the next one",
                      name, exc)
            continue
        log.info("config: %s update version %d over %s", name, config.version, local_path)
        return config
    return local


class ConfigUpdater:
    def __init__(self, agent: Reloadable, local_path: Path, state_directory: Path) -> None:
        self._agent = agent
        self._local_path = local_path
        self._store = ConfigStore(state_directory)
        self._queue: queue.Queue[_Update | _Reload | None] = queue.Queue()
        self._stop = threading.Event()
        self._last_offered: bytes | None = None
        self._thread = threading.Thread(target=self._work, name="config-updates", daemon=True)
        self.last_outcome: dict[str, Any] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(10)

    def offer(self, envelope: bytes) -> None:
        """An update arrived (MQTT thread: only queue it). An empty message is the backend
        clearing the retained update: nothing to apply."""
        if envelope:
            self._queue.put(_Update(envelope))

    def reload_local(self, reply: Reply = lambda error, message: None) -> None:
        """Reload the local config file; `reply` hears the outcome once it is running (the
        outcome is logged either way)."""
        self._queue.put(_Reload(reply))

    def _work(self) -> None:
        pending = self._store.pending()
        if pending is not None and pending == self._agent.config.version:
            log.info("config update: version %d was still being watched at the last stop; "
                     "watching it again", pending)
            self._watch(self._agent.health_snapshot(), self._last_known_good(), pending,
                        uplink_changed=False)
        elif pending is not None:
            self._store.confirm()
        while not self._stop.is_set():
            item = self._queue.get()
            if isinstance(item, _Update):
                self._handle_update(item.envelope)
            elif isinstance(item, _Reload):
                self._handle_reload(item.reply)

    # OTA updates
    def _handle_update(self, envelope: bytes) -> None:
        if envelope in (self._store.current(), self._last_offered):
            return  # the retained update we run, delivered again on (re)connect
        self._last_offered = envelope
        running = self._agent.config
        if not ota_active(running):
            log.warning("config update received but [ota] is disabled or pins no key: ignored")
            return
        try:
            accepted = check_update(envelope, self._trust(running),
                                    floor=max(self._store.highest(), running.version),
                                    local_config=self._local_path,
                                    dbc_store=self._store.dbc_directory)
            for name, entry in accepted.update.dbc.items():
                if entry.content is not None:
                    self._store.save_dbc(delivered_name(entry.sha256, name), entry.content)
            pipeline = self._prepare(accepted.config)
        except UpdateRejected as rejected:
            log.warning("config update%s rejected (%s): %s", _v(rejected.version),
                        rejected.reason, rejected.message)
            self._ack(rejected.version, "rejected", rejected.reason, rejected.message)
            return
        version = accepted.update.version
        log.info("config update: applying version %d (%s, key %s)", version,
                 accepted.update.target, accepted.update.kid.hex())
        self._store.commit(envelope, version)
        before = self._agent.health_snapshot()
        uplink_changed = pipeline.config.uplink != running.uplink
        self._agent.switch(pipeline)
        self._watch(before, running, version, uplink_changed=uplink_changed)

    def _watch(self, before: HealthSnapshot, fallback: AgentConfig, version: int, *,
               uplink_changed: bool) -> None:
        if self._stop.wait(self._agent.config.ota.grace_period):
            return  # stopping: still pending; watched again at the next start
        found = problems(before, self._agent.health_snapshot(), uplink_changed=uplink_changed)
        if not found:
            self._store.confirm()
            self._prune_dbc()
            log.info("config update: version %d applied and healthy", version)
            self._ack(version, "applied", None, "running and healthy after "
                      f"{self._agent.config.ota.grace_period:g} s")
            return
        message = "; ".join(found)
        log.error("config update: version %d failed at run time (%s); rolling back to "
                  "version %d", version, message, fallback.version)
        self._store.roll_back()
        try:
            self._agent.switch(self._agent.prepare(fallback))
        except AgentError as exc:
            log.critical("config update: cannot bring the last-known-good back (%s)", exc)
        self._ack(version, "rolled-back", Reason.RUNTIME_FAILURE,
                  f"{message}; running version {fallback.version} again")

    def _last_known_good(self) -> AgentConfig:
        previous = self._store.previous()
        if previous is not None:
            try:
                return stored_config(previous, self._trust(self._agent.config),
                                     local_config=self._local_path,
                                     dbc_store=self._store.dbc_directory)
            except UpdateRejected as exc:
                log.error("config update: the last-known-good no longer applies (%s)", exc)
        return load_config(self._local_path)

    # Local reloads
    def _handle_reload(self, reply: Reply) -> None:
        running = self._agent.config
        try:
            config = self._local_with_update(running)
            pipeline = self._agent.prepare(config)
        except AgentError as exc:
            log.error("reload rejected, still running version %d: %s", running.version, exc)
            reply(str(exc), "")
            return
        before = self._agent.health_snapshot()
        self._agent.switch(pipeline)
        log.info("reloaded %s: running version %d", self._local_path, config.version)
        reply(None, f"reloaded {self._local_path}: running version {config.version}; "
                    f"health watch for {config.ota.grace_period:g} s")
        self._watch(before, running, config.version,
                    uplink_changed=config.uplink != running.uplink)

    def _local_with_update(self, running: AgentConfig) -> AgentConfig:
        local = load_config(self._local_path)
        for section in ("vehicle", "keys", "state", "control"):
            if getattr(local, section) != getattr(running, section):
                raise ConfigError(f"{self._local_path}: [{section}] changed; that takes a "
                                  "restart (systemctl restart edge-agent)")
        current = self._store.current()
        if current is None or not ota_active(local):
            return local
        try:
            return stored_config(current, load_trust(local), local_config=self._local_path,
                                 dbc_store=self._store.dbc_directory)
        except UpdateRejected as exc:
            log.warning("the applied update does not apply over the edited local file (%s); "
                        "running the local file alone", exc)
            return local

    # Helpers
    def _prepare(self, config: AgentConfig) -> Prepared:
        try:
            return self._agent.prepare(config)
        except AgentError as exc:
            raise UpdateRejected(Reason.UNUSABLE, str(exc), config.version) from exc

    def _trust(self, config: AgentConfig) -> Trust:
        try:
            return load_trust(config)
        except AgentError as exc:
            raise UpdateRejected(Reason.UNKNOWN_KEY, f"cannot read [ota] trusted_keys: {exc}") \
                from exc

    def _prune_dbc(self) -> None:
        names = set()
        for envelope in (self._store.current(), self._store.previous()):
            if envelope is not None:
                try:
                    update = open_update(envelope, self._trust(self._agent.config).keys)
                except UpdateRejected:
                    continue
                names |= {delivered_name(e.sha256, name) for name, e in update.dbc.items()
                          if e.content}
        self._store.keep_only_dbc(names)

    def _ack(self, version: int | None, outcome: str, reason: str | None, message: str) -> None:
        document = {"version": version, "outcome": outcome, "reason": reason and str(reason),
                    "message": message, "running_version": self._agent.config.version,
                    "at": round(time.time(), 3)}
        self.last_outcome = document
        self._agent.publish("config/ack", json.dumps(document).encode())


def _v(version: int | None) -> str:
    return "" if version is None else f" version {version}"
