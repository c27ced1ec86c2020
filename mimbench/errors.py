"""The two kinds of error the core tells apart."""


class ConfigError(Exception):
    """Bad usage: a suite, a parameter or a plugin is wrong. One line; exit code 2."""


class ContractError(Exception):
    """A component broke its contract at run time (e.g. a mask of the wrong shape).

    It fails the run it happened in; the rest of the suite goes on.
    """


def missing_extra(what: str, module: str, extra: str) -> str:
    """The one-line error for a component (``what``, e.g. ``"tracker 'mlflow'"``) whose optional
    dependency ``module`` is not installed, with the pip command that installs ``extra``."""
    return (f"{what} needs {module}, which is not installed: pip install 'mimbench[{extra}]' "
            f"(from a clone: pip install -e '.[{extra}]')")
