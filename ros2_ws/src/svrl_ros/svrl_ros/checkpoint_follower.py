"""policy_server's side of the transfer loop: announced checkpoints -> guarded, loaded -> swapped between goals.

trainer_node announces each checkpoint on svrl/checkpoint. With `follow_checkpoints` on, the newest
announcement is checked and loaded here, on a loader thread of its own (the runner thread keeps serving the
running goal with the current model meanwhile):

1. skip it when it is the checkpoint already serving or already waiting;
2. the guard (checkpoint_guard): the interface files verify against the manifest, the announcement describes
   those files, and its action space and interface fingerprint equal the running checkpoint's;
3. load it (the runtime verifies every file, weights included, and refuses non-finite weights);
4. keep it *pending*; policy_server installs it when no goal runs, or at the start of the next goal before its
   first inference (on the runner thread, queued behind any call still running): never mid-inference, and
   every chunk of one goal comes from one checkpoint.

Any failure refuses the checkpoint: it is logged, reported on /diagnostics (WARN, with the reason), and the
server keeps the model it has. Only the newest announcement counts: one superseded while another loads is
skipped. ROS-free (callables in, a status out), so the rules are tested without DDS.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svrl_ros.checkpoint_guard import (
    CheckpointRefused,
    check_announcement,
    check_compatible,
    read_interface,
)

OK, WARN = 0, 1


@dataclass(frozen=True)
class Announced:
    """What a svrl/checkpoint message says (svrl_interfaces/PolicyCheckpoint), as plain values."""

    path: str
    step: int
    checkpoint_id: str
    action_space: str
    codec_fingerprint: str


class CheckpointFollower:
    """Validates and loads announced checkpoints off the runner thread; hands them over between goals.

    `load(path)` builds the runtime policy (an object with `.checkpoint_id`); `running_path()` is the
    folder of the checkpoint serving now (None before one is loaded); `on_pending()` is called, on the loader
    thread, when a loaded checkpoint waits to be installed; `on_change()` after anything `status()` shows
    changed; `log` has info / warning / error.
    """

    def __init__(
        self,
        *,
        load: Callable[[str], Any],
        running_path: Callable[[], Path | None],
        on_pending: Callable[[], None],
        on_change: Callable[[], None],
        log: Any,
        enabled: bool = False,
    ) -> None:
        self._load = load
        self._running_path = running_path
        self._on_pending = on_pending
        self._on_change = on_change
        self._log = log
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._enabled = enabled
        self._newest: Announced | None = None
        self._handled: Announced | None = None  # the newest announcement the loader has dealt with
        self._pending: tuple[Any, Announced, str] | None = None  # (policy, announcement, fingerprint)
        self._loading: Announced | None = None
        self.loaded = 0
        self.refused = 0
        self.last_refused: tuple[Announced, str] | None = None
        self.last_installed: Announced | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loader, name="checkpoint_follower", daemon=True)
        self._thread.start()

    # -- inputs ----------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        with self._lock:
            return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Turn following on or off; turned on, the newest announcement heard meanwhile is considered."""
        with self._lock:
            self._enabled = bool(enabled)
            if not self._enabled:
                self._pending = None  # off means off: nothing loaded while on is installed later
            self._wake.notify_all()
        self._on_change()

    def announce(self, announced: Announced) -> None:
        """A svrl/checkpoint message (any thread). Only the newest counts."""
        with self._lock:
            self._newest = announced
            enabled = self._enabled
            self._wake.notify_all()
        if not enabled:
            self._log.info(
                f"checkpoint {announced.checkpoint_id} announced; not loaded: follow_checkpoints is off"
            )

    def take_pending(self) -> Any | None:
        """The loaded checkpoint waiting to be installed, once (None when there is none).

        Checked again against the checkpoint serving now: if that changed meanwhile (an operator set the
        `checkpoint` parameter), a candidate guarded against the old one is dropped, not installed.
        """
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None
        policy, announced, fingerprint = pending
        running = self._running_path()
        try:
            current = read_interface(running) if running is not None else None
        except CheckpointRefused as error:
            current, reason = None, str(error)
        else:
            reason = "no checkpoint is serving" if current is None else ""
        if current is not None and current.fingerprint == fingerprint:
            return policy
        reason = (
            reason
            or f"the serving checkpoint changed meanwhile to {current.checkpoint_id}, another interface"
        )
        self._log.warning(f"dropped loaded checkpoint {announced.checkpoint_id}: {reason}")
        return None

    def installed(self, policy: Any) -> None:
        """policy_server installed `policy` (taken from take_pending): count it and say so."""
        with self._lock:
            self.loaded += 1
            announced = self._announced_for(policy)
            self.last_installed = announced
        self._log.info(
            f"now serving checkpoint {policy.checkpoint_id}"
            + (f" (step {announced.step}, announced on svrl/checkpoint)" if announced else "")
        )
        self._on_change()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=5.0)

    # -- the loader thread ---------------------------------------------------------------------------
    def _loader(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not (self._enabled and self._newest not in (None, self._handled)):
                    self._wake.wait()
                if self._closed:
                    return
                announced = self._newest
                self._handled = announced
                self._loading = announced
            try:
                self._consider(announced)
            finally:
                with self._lock:
                    self._loading = None
            self._on_change()

    def _consider(self, announced: Announced) -> None:
        running = self._running_path()
        with self._lock:
            waiting = self._pending[1] if self._pending is not None else None
        if waiting is not None and waiting.checkpoint_id == announced.checkpoint_id:
            return
        try:
            if running is None:
                raise CheckpointRefused("no checkpoint is serving yet to compare it with")
            current = read_interface(running)
            if announced.checkpoint_id == current.checkpoint_id and waiting is None:
                self._log.info(f"checkpoint {announced.checkpoint_id} is the one serving: nothing to load")
                return
            candidate = read_interface(announced.path)
            check_announcement(
                candidate,
                checkpoint_id=announced.checkpoint_id,
                action_space=announced.action_space,
                fingerprint=announced.codec_fingerprint,
            )
            check_compatible(current, candidate)
            self._log.info(f"checkpoint {announced.checkpoint_id} passed the guard; loading it")
            try:
                policy = self._load(str(candidate.path))
            except Exception as error:  # corrupt weights, a runtime that cannot build it...
                raise CheckpointRefused(f"it does not load: {type(error).__name__}: {error}") from error
            if policy.checkpoint_id != candidate.checkpoint_id:
                raise CheckpointRefused(
                    f"its files changed while loading ({candidate.checkpoint_id} -> {policy.checkpoint_id})"
                )
        except CheckpointRefused as refusal:
            with self._lock:
                self.refused += 1
                self.last_refused = (announced, str(refusal))
            self._log.warning(
                f"refused checkpoint {announced.checkpoint_id or '?'} ({announced.path}): {refusal}; "
                "keeping the model that is serving"
            )
            return
        with self._lock:
            if not self._enabled:
                return
            self._pending = (policy, announced, candidate.fingerprint)
        self._on_pending()

    def _announced_for(self, policy: Any) -> Announced | None:
        for candidate in (self._newest, self._handled):
            if candidate is not None and candidate.checkpoint_id == policy.checkpoint_id:
                return candidate
        return None

    # -- output ----------------------------------------------------------------------------------------
    def status(self, serving_id: str) -> tuple[int, str, dict[str, str]]:
        """(level, message, key/values) for /diagnostics: WARN while the newest announcement was refused."""
        with self._lock:
            enabled, newest, pending, loading = self._enabled, self._newest, self._pending, self._loading
            refused, last_refused, loaded = self.refused, self.last_refused, self.loaded
        values = {
            "serving": serving_id,
            "follow_checkpoints": str(enabled).lower(),
            "announced": newest.checkpoint_id if newest else "",
            "pending": pending[1].checkpoint_id if pending else "",
            "loading": loading.checkpoint_id if loading else "",
            "loaded": str(loaded),
            "refused": str(refused),
        }
        if last_refused is not None:
            values["last_refused"] = last_refused[0].checkpoint_id
            values["last_refused_reason"] = last_refused[1]
        if last_refused is not None and newest == last_refused[0]:
            return WARN, f"refused {last_refused[0].checkpoint_id}: {last_refused[1]}", values
        if pending is not None:
            return (
                OK,
                f"serving {serving_id}; {pending[1].checkpoint_id} loaded, swaps in before the next goal",
                values,
            )
        if loading is not None:
            return OK, f"serving {serving_id}; loading {loading.checkpoint_id}", values
        if newest is not None and not enabled and newest.checkpoint_id != serving_id:
            return (
                OK,
                f"serving {serving_id}; {newest.checkpoint_id} announced (follow_checkpoints off)",
                values,
            )
        return OK, f"serving {serving_id}", values
