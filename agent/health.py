"""Health counters: what each part of the data path has seen, sent in every batch."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class SourceHealth:
    """Counters of one source; only its own thread writes them."""

    frames: int = 0
    ignored: int = 0
    error_frames: int = 0
    short_frames: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    last_frame_time: float = 0.0

    def counters(self) -> dict[str, int]:
        return {name: value for name, value in asdict(self).items() if isinstance(value, int)}
