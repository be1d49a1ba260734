"""The ``trajstream`` command: a thin dispatcher over the subcommands of each package.

Subcommands are imported only when invoked, so ``trajstream --help`` and the simulator start
without paying for a TensorFlow import.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from trajstream import __version__
from trajstream.errors import ConfigError, TrajstreamError

# name -> ("module:attribute" of a click command, one-line help)
_COMMANDS = {
    "simulate": ("simulator.cli:simulate", "Generate traffic and publish positions."),
    "replay": ("simulator.cli:replay", "Publish a recorded positions file to Kafka."),
    "data": ("simulator.recorded.cli:data", "Import recorded traffic (CommonRoad, NGSIM)."),
    "scenarios": ("simulator.precrash_cli:scenarios",
                  "Write the NHTSA pre-crash scenario library (positions + truth)."),
    "process": ("stream.commands:process", "Run the stream processor."),
    "alerts": ("stream.alerts_cli:alerts", "Print collision alerts from a Kafka topic."),
    "evaluate": ("stream.evaluate_cli:evaluate",
                 "Score alerts against true collisions and motion, beside a CV-TTC baseline."),
    "demo": ("stream.commands:demo", "Simulator and processor in one process, no broker."),
    "map": ("stream.livemap.cli:map_command", "Live map of vehicles, paths and alerts in the "
            "browser."),
    "model": ("model.cli:model", "Train and evaluate the LSTM trajectory model."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        target, _ = _COMMANDS[cmd_name]
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"trajstream.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in _COMMANDS.items()])


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def option_given(name: str) -> bool:
    """Whether the user set the running command's option ``name`` (flag or environment),
    not left it at its default: what contradicts another setting only when given."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(name) in (
        click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def envvar_alias(name: str, alias: str,
                 applies: Callable[[click.Context], bool] | None = None,
                 ) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback for an option read from ``name`` and its alias ``alias`` (give
    ``envvar=[name, alias]``): the two set to different values are refused (exit 2) when the
    option's value came from the environment (a flag wins over both) and ``applies`` (by
    default always) says the command reads the option."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        first, second = os.environ.get(name), os.environ.get(alias)
        if (first and second and first.split() != second.split()
                and param.name is not None
                and ctx.get_parameter_source(param.name)
                is click.core.ParameterSource.ENVIRONMENT
                and (applies is None or applies(ctx))):
            raise click.BadParameter(f"{name}={first} and {alias}={second} (its alias) differ: "
                                     f"set one of them", ctx=ctx, param=param)
        return value

    return check


def alias_help(name: str, alias: str) -> str:
    return f"{alias} is read as an alias of {name}; set to different values, the two are refused."


# The LSTM weights' variable, then its alias: `model evaluate` read TRAJSTREAM_MODEL_WEIGHTS
# while `process` and `demo` read TRAJSTREAM_WEIGHTS, so one environment gave them different
# weights without a word. Every --weights reads both (not for a predictor without weights).
WEIGHTS_ENVVARS = ("TRAJSTREAM_WEIGHTS", "TRAJSTREAM_MODEL_WEIGHTS")
WEIGHTS_ENV_HELP = alias_help(*WEIGHTS_ENVVARS)
weights_envvars_agree = envvar_alias(
    *WEIGHTS_ENVVARS, applies=lambda ctx: ctx.params.get("predictor", "lstm") == "lstm")

# The wait for the broker at start-up: `simulate` and `replay` read TRAJSTREAM_KAFKA_TIMEOUT_S,
# `alerts` read TRAJSTREAM_CONNECT_TIMEOUT. Each reads both.
KAFKA_TIMEOUT_ENVVARS = ("TRAJSTREAM_KAFKA_TIMEOUT_S", "TRAJSTREAM_CONNECT_TIMEOUT")
KAFKA_TIMEOUT_ENV_HELP = alias_help(*KAFKA_TIMEOUT_ENVVARS)
kafka_timeout_envvars_agree = envvar_alias(*KAFKA_TIMEOUT_ENVVARS)


# Raw Kafka client settings (librdkafka names), one variable for every command that talks
# to Kafka: process, alerts, simulate, replay, map.
KAFKA_OPTIONS_ENVVAR = "TRAJSTREAM_KAFKA_OPTIONS"


def parse_kafka_options(values: tuple[str, ...], flag: str = "--kafka-option",
                        ) -> dict[str, str]:
    """``KEY=VALUE`` items (a variable's value holds space-separated pairs) -> settings; a
    later pair wins. A pair without ``=`` or a key is refused naming ``flag`` (exit 2)."""
    out: dict[str, str] = {}
    for item in values:
        for part in item.split():
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"expected KEY=VALUE, got {part!r}",
                                         param_hint=flag)
            out[key] = value
    return out


def kafka_option(help: str) -> Callable[[Any], Any]:
    """The ``--kafka-option KEY=VALUE`` option (repeatable, $TRAJSTREAM_KAFKA_OPTIONS)."""
    return click.option("--kafka-option", "kafka_option", envvar=KAFKA_OPTIONS_ENVVAR,
                        show_envvar=True, show_default=True, multiple=True, default=(),
                        metavar="KEY=VALUE", help=help)


class LogLevels(click.ParamType):
    """``LEVEL[,LOGGER=LEVEL...]``: the level of every log, then of single loggers, e.g.
    ``INFO,kafka.coordinator=DEBUG`` for one Kafka client's group joins without the rest of
    its DEBUG output (megabytes a second)."""

    name = "LEVEL[,LOGGER=LEVEL...]"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, dict[str, str]]:
        if isinstance(value, tuple):
            return value
        root, loggers = "INFO", {}
        for i, item in enumerate(str(value).split(",")):
            name, named, level = item.strip().rpartition("=")
            level = level.strip().upper()
            if level not in _LEVELS:
                self.fail(f"{level or item!r} is not a level ({', '.join(_LEVELS)})", param, ctx)
            if not named:
                if i:
                    self.fail(f"only the first item may be a bare level, got {item!r}; "
                              "name the logger: LOGGER=LEVEL", param, ctx)
                root = level
            elif not name.strip():
                self.fail(f"no logger name before '=' in {item!r}", param, ctx)
            else:
                loggers[name.strip()] = level
        return root, loggers


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="trajstream",
                      message="%(prog)s %(version)s")
@click.option(
    "--log-level",
    default="INFO",
    envvar="TRAJSTREAM_LOG_LEVEL",
    show_default=True,
    show_envvar=True,
    type=LogLevels(),
    help="Logging verbosity (logs go to stderr): DEBUG, INFO, WARNING or ERROR, then "
    "optionally LOGGER=LEVEL pairs for single loggers, comma-separated "
    "(INFO,kafka.coordinator=DEBUG: kafka-python's group joins; its own logs are limited to "
    "errors otherwise).",
)
def cli(log_level: tuple[str, dict[str, str]]) -> None:
    """trajstream: real-time trajectory prediction and collision alerts on Apache Kafka.

    Every option can also be set with the TRAJSTREAM_* environment variable shown in each
    subcommand's --help.
    """
    root, loggers = log_level
    logging.basicConfig(
        level=root,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)


def _dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr and carries on: where a
    process that seems stuck waits, even inside a Kafka client's C code."""
    if not hasattr(signal, "SIGUSR1"):
        return
    # The process's own stderr (sys.stderr may be a stream without a file, e.g. captured);
    # without one there are no dumps.
    if sys.__stderr__ is None:
        return
    with contextlib.suppress(OSError, ValueError):
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one clear error line and a non-zero exit instead of a traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _dump_stacks_on_sigusr1()
    # numpy is not imported yet: keep BLAS single-threaded. The processor's matmuls are small
    # (hundreds of rows); OpenBLAS threads cost more than they give and spin on busy CPUs
    # (LSTM step 4x the CPU time with 2 threads on the 2-core reference machine).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        cli.main(args=argv, prog_name="trajstream", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("trajstream: aborted", err=True)
        return 130
    except click.UsageError as exc:
        # One line, not click's three: the bad value and where to read about it.
        command = exc.ctx.command_path if exc.ctx else "trajstream"
        hint = f"see '{command} --help'"
        if isinstance(exc, click.NoSuchOption) and any(
                exc.option_name in p.opts for p in cli.params):
            hint = f"it is trajstream's own: trajstream {exc.option_name} ... SUBCOMMAND"
        click.echo(f"trajstream: error: {exc.format_message()} ({hint})", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"trajstream: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except TrajstreamError as exc:
        click.echo(f"trajstream: error: {exc}", err=True)
        # settings that cannot run (2): a restart will not help; a run that failed (1)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except OSError as exc:  # a file or device failing outside the paths that name it
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"trajstream: error: {exc.strerror or exc}{where}", err=True)
        logging.getLogger("trajstream").debug("traceback", exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
