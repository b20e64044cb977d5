"""Each source's database as the agent reads it, for the offline checks (`config check`,
`diag selftest`): a value source's catalogue; a CAN source's DBCs, read (and written, for the
agent's user) through the agent's own parsed-DBC cache, as the agent reads them."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.schema import AgentConfig
from agent.decoding.cache import DbcCache
from agent.decoding.dbc import LoadedDbc, load_source_dbc
from agent.decoding.tables import DbcTables
from agent.errors import AgentError
from agent.sources.catalogue import Catalogue
from agent.sources.registry import catalogue_for, is_value_source


@dataclass(frozen=True)
class SourceDatabase:
    """One source's database (`None` with the `error` that kept it from being read): a CAN
    source's DBC tables, which plan without cantools (with the cache warm, nothing imports
    it); `dbc`, a CAN source's DBCs as loaded: their digest and layout warnings."""

    name: str
    database: DbcTables | Catalogue | None
    dbc: LoadedDbc | None = None
    error: AgentError | None = None


def read_databases(config: AgentConfig) -> list[SourceDatabase]:
    """Every source's, in the config's order; a DBC that cannot be read is its source's error."""
    cache = DbcCache.in_state(config.state.directory)
    read: list[SourceDatabase] = []
    for source in config.sources:
        if is_value_source(source):
            read.append(SourceDatabase(source.name, catalogue_for(source)))
            continue
        try:
            loaded = load_source_dbc(source, cache)
        except AgentError as exc:
            read.append(SourceDatabase(source.name, None, error=exc))
            continue
        read.append(SourceDatabase(source.name, loaded.tables, loaded))
    return read
