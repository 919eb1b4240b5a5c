"""The ``vlroute`` command line."""

from __future__ import annotations

import importlib
import sys

import click

from vlroute import __version__
from vlroute.errors import VlrouteError

#: command name -> "module:attribute": a command's module is imported when the command runs
#: (or when --help lists them all), so that `vlroute route` on the edge install does not
#: import pandas and pyarrow for the bench commands
COMMANDS = {
    "bench": "vlroute.cli.bench:bench", "report": "vlroute.cli.report:report",
    "serve": "vlroute.cli.serve:serve", "dev-backends": "vlroute.cli.serve:dev_backends",
    "logs": "vlroute.cli.serve:logs", "eval": "vlroute.cli.evaluate:eval_command",
    "features": "vlroute.cli.features:features", "train": "vlroute.cli.train:train",
    "routers": "vlroute.cli.evaluate:routers", "demo": "vlroute.cli.demo:demo",
    "models": "vlroute.cli.models:models", "collect": "vlroute.cli.collect:collect_command",
    "judge": "vlroute.cli.judge:judge", "loop": "vlroute.cli.loop:loop",
    "export": "vlroute.cli.edge:export", "route": "vlroute.cli.edge:route"}


class _Group(click.Group):
    """Every error as one line ``Error: ...`` and exit status 1, never a traceback (unless
    ``--debug``): vlroute's own errors (which name the file, line, option or parameter and
    what was expected), value errors (bad input that a library check caught) and file-system
    errors as their message; anything else, which is a bug, as its type and message with a
    hint to rerun with ``--debug``. Click's usage errors keep their usage line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, attr = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(error_line(exc)) from exc


def error_line(exc: BaseException) -> str:
    """The one-line message the CLI shows for ``exc``."""
    from vlroute._optional import MissingExtraError

    if isinstance(exc, VlrouteError | FileExistsError | ValueError | MissingExtraError) \
            and str(exc).strip():
        text = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}."
    else:
        detail = str(exc) or "(no message)"
        text = (f"{type(exc).__name__}: {detail} (unexpected; rerun as `vlroute --debug ...` "
                "for the traceback)")
    return " ".join(text.split()) or type(exc).__name__


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vlroute")
@click.option("--debug", is_flag=True, envvar="VLROUTE_DEBUG",
              help="Show the traceback of an error instead of one line.")
def cli(debug: bool) -> None:
    """vlroute: route vision-language requests to the right model.

    Build routing benchmarks from evaluation logs, evaluate routers under scenarios
    (fast, quality, eco), and run the demo on the embedded DynaMath subset.
    """


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))
