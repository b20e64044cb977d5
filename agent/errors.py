"""Errors a user can cause, each with a message that says what to fix."""


class AgentError(Exception):
    """Base for every error the agent reports to a user instead of a traceback."""


class ConfigError(AgentError):
    """The configuration file is missing, malformed or inconsistent."""


class DbcError(AgentError):
    """A DBC file cannot be read or does not define what the plan asks for."""


class KeyFileError(AgentError):
    """A key file is missing, unreadable or not the expected kind of key."""


class WireFormatError(AgentError):
    """A batch cannot be verified or decoded."""
