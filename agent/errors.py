"""Errors a user can cause, each with a message that says what to fix."""


class AgentError(Exception):
    """Base for every error the agent reports to a user instead of a traceback."""


class ConfigError(AgentError):
    """The configuration file is missing, malformed or inconsistent."""


class ConfigProblems(ConfigError):
    """Several independent mistakes in one configuration file, reported together (one a line),
    so that a field tech fixes them in one round."""

    def __init__(self, problems: list[ConfigError]) -> None:
        self.problems = [str(problem) for problem in problems]
        super().__init__("\n".join(self.problems))


class DbcError(AgentError):
    """A DBC file cannot be read or does not define what the plan asks for."""


class KeyFileError(AgentError):
    """A key file is missing, unreadable or not the expected kind of key."""


class WireFormatError(AgentError):
    """A batch cannot be verified or decoded."""
