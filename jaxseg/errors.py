"""User-facing errors: one clear line naming the bad value and what was expected.

`jaxseg.main` prints any `JaxsegError` as a single line and exits with status 2.
"""


class JaxsegError(Exception):
  """Base class of errors caused by user input (config, data, workdir)."""


class ConfigError(JaxsegError, ValueError):
  """A config value is unknown, inconsistent, or does not fit the data."""


class DataError(JaxsegError, ValueError):
  """A dataset, data_dir or example does not match what the task expects."""


class CheckpointError(JaxsegError):
  """A workdir holds a checkpoint that does not fit the current config."""


class NonFiniteLossError(JaxsegError, FloatingPointError):
  """Training produced a NaN or Inf loss."""


class RuleError(JaxsegError, ValueError):
  """A HyperQuest move breaks a rule of the game (the message names the rule); the game's
  state is unchanged."""


class UnknownGameError(JaxsegError, KeyError):
  """No HyperQuest game has this id."""

  def __str__(self):
    return str(self.args[0]) if self.args else ""
