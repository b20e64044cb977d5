"""Signed documents of any shape, for tests that a trusted key signing nonsense cannot crash
the vehicle (config updates, fetch requests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# What CBOR encodes: scalars and bytes nested in lists and maps (keys text or integers).
ANY_DOCUMENT: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12) | st.integers(), children, max_size=6),
    max_leaves=20)
