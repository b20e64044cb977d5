"""A narrower consent reaches back: nothing sealed under a wider one may still leave.

When the owner's consent goes down (a local `diag consent`, an update, a reload), the keys the
wider levels' spooled batches and events are sealed under are destroyed first (so they are
unreadable even if the rows cannot be deleted now), then the rows are dropped and counted
(docs/privacy.md, `[privacy] on_downgrade = "drop"`). `edge-agent privacy erase` does the same
for every level.
"""

from __future__ import annotations

import logging

from agent.output.spool import Spool
from agent.privacy.at_rest import AtRest
from agent.privacy.consent import Consent

log = logging.getLogger(__name__)


class Downgrades:
    """Drops from the spool what a consent no longer allows; `dropped` counts it."""

    def __init__(self, spool: Spool, at_rest: AtRest) -> None:
        self._spool = spool
        self._at_rest = at_rest
        self.dropped = 0

    def enforce(self, consent: Consent) -> None:
        try:
            self._at_rest.forget_above(consent.rank)
        except OSError:
            log.exception("privacy: cannot destroy the spool keys above consent %s",
                          consent.level)
        try:
            dropped = self._spool.drop_above(consent.rank)
        except Exception:
            # The agent goes on sending under the new consent; the log says what is left.
            log.exception("privacy: cannot drop spooled batches above consent %s",
                          consent.level)
            return
        if dropped:
            self.dropped += dropped
            log.warning("privacy: consent is now %s: dropped %d spooled batches and events "
                        "sealed under a wider consent", consent.level, dropped)

    def erase(self) -> dict[str, object]:
        """`edge-agent privacy erase`: destroy every spool key, then drop every spooled row
        (unreadable already; dropping frees the space). Sampling goes on under the consent in
        force, sealed under new keys."""
        destroyed = self._at_rest.forget_above(-1)
        dropped = self._spool.drop_above(-1)
        log.warning("privacy: erased on request: %d spooled batches and events dropped",
                    dropped)
        return {"keys_destroyed": destroyed, "dropped": dropped}
