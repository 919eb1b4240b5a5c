"""The ``vlroute`` command line."""

from __future__ import annotations

import sys

import click

from vlroute import __version__
from vlroute.errors import VlrouteError


class _Group(click.Group):
    """Every error as one line ``Error: ...`` and exit status 1, never a traceback (unless
    ``--debug``): vlroute's own errors (which name the file, line, option or parameter and
    what was expected), value errors (bad input that a library check caught) and file-system
    errors as their message; anything else, which is a bug, as its type and message with a
    hint to rerun with ``--debug``. Click's usage errors keep their usage line."""

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


def _register() -> None:
    from vlroute.cli.bench import bench
    from vlroute.cli.collect import collect_command
    from vlroute.cli.demo import demo
    from vlroute.cli.edge import export, route
    from vlroute.cli.evaluate import eval_command, routers
    from vlroute.cli.features import features
    from vlroute.cli.judge import judge
    from vlroute.cli.loop import loop
    from vlroute.cli.models import models
    from vlroute.cli.report import report
    from vlroute.cli.serve import dev_backends, logs, serve
    from vlroute.cli.train import train

    cli.add_command(bench)
    cli.add_command(report)
    cli.add_command(serve)
    cli.add_command(dev_backends)
    cli.add_command(logs)
    cli.add_command(eval_command)
    cli.add_command(features)
    cli.add_command(train)
    cli.add_command(routers)
    cli.add_command(demo)
    cli.add_command(models)
    cli.add_command(collect_command)
    cli.add_command(judge)
    cli.add_command(loop)
    cli.add_command(export)
    cli.add_command(route)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))
