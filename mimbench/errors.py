"""The two kinds of error the core tells apart."""


class ConfigError(Exception):
    """Bad usage: a suite, a parameter or a plugin is wrong. One line; exit code 2."""


class ContractError(Exception):
    """A component broke its contract at run time (e.g. a mask of the wrong shape).

    It fails the run it happened in; the rest of the suite goes on.
    """
