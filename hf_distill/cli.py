"""What every recipe shares: ``--config x.yaml`` plus CLI overrides, and one clear error instead of a traceback.

Usage in a recipe::

    parser = HfArgumentParser((ScriptArguments, ModelArguments, DistillationArguments))
    script_args, model_args, training_args = parse_config(parser)

``parse_config`` reads the YAML file named by ``--config`` (every key must be a field of one of the dataclasses;
an unknown key is an error naming the file and the key), uses its values as defaults, and lets any flag given on
the command line override them. :func:`exit_on_user_error` turns the errors a user can fix (bad data, bad
config, missing file) into one message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import yaml
from transformers import HfArgumentParser

from .errors import ConfigError, HfDistillError

logger = logging.getLogger("hf_distill")


def load_yaml_config(path: str, known_fields: set[str]) -> dict[str, Any]:
    """Read a recipe YAML file into a flat dict of field values, checking every key is known."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found. Fix: check the path given to --config.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError(
            f"{where}: invalid YAML ({getattr(error, 'problem', error)}). Fix: correct the syntax."
        ) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the config must be a mapping of 'field: value' lines, got {type(values).__name__}.")
    for key in values:
        if key not in known_fields:
            close = difflib.get_close_matches(str(key), known_fields, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else " See --help for the accepted fields."
            raise ConfigError(f"{path}: unknown field '{key}'.{hint}")
    return values


def parse_config(parser: HfArgumentParser, argv: list[str] | None = None) -> tuple:
    """Parse ``[--config file.yaml] [--flag value ...]`` into the parser's dataclasses (CLI wins over YAML)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a path to a YAML file.")
        config_path = argv[i + 1]
        del argv[i : i + 2]
    if config_path is not None:
        known = {action.dest for action in parser._actions} - {"config", "help"}
        values = load_yaml_config(config_path, known)
        for action in parser._actions:
            if action.dest in values:
                # A required flag given by the YAML file is no longer required on the command line.
                action.required = False
        parser.set_defaults(**{k: (str(v) if isinstance(v, float) else v) for k, v in values.items()})
    if not any(action.dest == "config" for action in parser._actions):
        parser.add_argument(
            "--config", help="YAML file of 'field: value' lines; flags on the command line win over it."
        )
    outputs = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    *dataclasses_, remaining = outputs
    # --config was taken out of argv above; argparse still hands back its namespace (config=None): drop it.
    dataclasses_ = [output for output in dataclasses_ if not isinstance(output, argparse.Namespace)]
    if remaining:
        raise ConfigError(f"unknown command-line argument(s) {remaining}. Fix: see --help for the accepted flags.")
    return tuple(dataclasses_)


def exit_on_user_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a recipe's ``main``: errors a user can fix end the run with one message and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except HfDistillError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except FileNotFoundError as error:
            print(f"error: {error}. Fix: check the path.", file=sys.stderr)
            sys.exit(2)

    return wrapper
