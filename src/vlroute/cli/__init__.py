"""The ``vlroute`` command line."""

from __future__ import annotations

import sys

import click

from vlroute import __version__
from vlroute.errors import VlrouteError


class _Group(click.Group):
    """Turns vlroute's errors into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (VlrouteError, FileExistsError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vlroute")
def cli() -> None:
    """vlroute: route vision-language requests to the right model.

    Build routing benchmarks from evaluation logs, evaluate routers under scenarios
    (fast, quality, eco), and run the demo on the embedded DynaMath subset.
    """


def _register() -> None:
    from vlroute.cli.bench import bench
    from vlroute.cli.demo import demo
    from vlroute.cli.evaluate import eval_command, routers
    from vlroute.cli.features import features
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


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))
