"""On-vehicle events: detectors over the sampled signals, sent with priority on `/events`.

`model` holds the shared types, one module per detector (`trip`, `stop`, `load`, `battery`,
`trigger`), `engine` feeds them from the ring at every sampling tick, `sink` filters what they
find by the owner's consent and seals it, `codec` is the wire form (docs/events.md).
"""
