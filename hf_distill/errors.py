"""The errors a user can fix: one base class the library raises and the programs turn into one line.

Every error here carries a message that says what is wrong, where (file, line, field or flag) and how to fix
it. :func:`hf_distill.cli.exit_on_user_error` catches :class:`HfDistillError` and ends a program with
``error: <message>`` on stderr and exit status 2, so a bad input never ends in a traceback. Library code raises
the most specific class; callers that only want "a user error" catch the base.

==========================  ======================================================================
class                       raised for
==========================  ======================================================================
:class:`ConfigError`        a recipe option, YAML key or checkpoint setting that cannot work
:class:`DataFormatError`    a ranking data file (or in-memory group) that cannot be read
:class:`TeacherConfigError` a teacher option or checkpoint that cannot work (a :class:`ConfigError`)
:class:`ResumeMismatchError`  a partial scoring run made with other input, teacher or options
:class:`NonFiniteScoreError`  a teacher score that is NaN or infinite (the scoring run stops at its batch)
:class:`HubPushError`       a push to the Hub that failed; local files are unchanged
:class:`PeerProcessError`   another process of a data-parallel job failed: this one stops too, at once
:class:`MissingDependencyError`  an optional package a feature needs is not installed
==========================  ======================================================================

All are ``ValueError`` subclasses (what they were before the base existed, so ``except ValueError`` keeps
working); :class:`MissingDependencyError` is also an ``ImportError``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataFormatError",
    "HfDistillError",
    "HubPushError",
    "MissingDependencyError",
    "NonFiniteScoreError",
    "PeerProcessError",
    "ResumeMismatchError",
    "TeacherConfigError",
]


class HfDistillError(ValueError):
    """Base of every error a user can fix; the message says what, where and how to fix it."""


class ConfigError(HfDistillError):
    """A configuration value (option, YAML key, checkpoint setting) a user can fix."""


class TeacherConfigError(ConfigError):
    """A teacher option or checkpoint that cannot work, with the fix in the message."""


class DataFormatError(HfDistillError):
    """A ranking data file (or in-memory group) that cannot be read, with where and how to fix it.

    The message reads ``"{file}:{line}: field '{field}': {problem}. Fix: {fix}"``; parts that do not apply
    (no line for a missing file, no field for bad JSON) are left out. The parts are also kept as attributes
    (``source``, ``place``, ``field``, ``problem``, ``fix``) for code that wants to react to them.
    """

    def __init__(self, source: str, place: str | None, field: str | None, problem: str, fix: str) -> None:
        self.source, self.place, self.field, self.problem, self.fix = source, place, field, problem, fix
        where = source if place is None else f"{source}:{place}"
        what = "" if field is None else f" field '{field}':"
        super().__init__(f"{where}:{what} {problem}. Fix: {fix}")

    def __reduce__(self):  # picklable across DataLoader workers and processes despite the 5-argument __init__
        return (type(self), (self.source, self.place, self.field, self.problem, self.fix))


class ResumeMismatchError(HfDistillError):
    """A partial scoring run was made with other input, teacher or options than this one."""


class NonFiniteScoreError(HfDistillError):
    """A teacher gave a NaN or infinite value (float16 overflow, a broken checkpoint); nothing non-finite is kept."""


class HubPushError(HfDistillError):
    """A push to the Hub failed (network, login, permissions, repo name); the local files are unchanged."""


class PeerProcessError(HfDistillError):
    """Another process of a data-parallel job stopped with an error (named in the message): this process stops
    too instead of waiting at the next collective until its timeout."""


class MissingDependencyError(HfDistillError, ImportError):
    """An optional package that a feature needs is not installed; the message is the ``pip install`` line."""
