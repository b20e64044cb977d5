"""A narrower consent reaches back: nothing sealed under a wider one may still leave.

When the owner's consent goes down (a local `diag consent`, an update, a reload), the batches
and events already in the spool under the wider consent are dropped from it, and counted
(docs/privacy.md, `[privacy] on_downgrade = "drop"`).
"""

from __future__ import annotations

import logging

from agent.output.spool import Spool
from agent.privacy.consent import Consent

log = logging.getLogger(__name__)


class Downgrades:
    """Drops from the spool what a consent no longer allows; `dropped` counts it."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self.dropped = 0

    def enforce(self, consent: Consent) -> None:
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
