"""`cp-plan`: the command line's entry. This module assembles the app from the command groups in
``commands/`` (one module per group; shared options in ``commands/common.py``) and turns errors
into one line. Commands parse, build a config, call the library, render.

Heavy modules (torch, plotly, scipy, pandas) are imported inside the commands that need them so
that `cp-plan --help` and `cp-plan recommend` start fast; a test proves torch and plotly stay out.
Every :class:`planner.errors.CpPlanError` becomes one line on stderr and exit code 1 (bad usage
exits 2, as click does); set CP_PLAN_DEBUG=1 to see the traceback.
"""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import os
import sys

import typer

from commands import corpus, fit, plan, report, runs, train
from commands.common import print_error
from planner.errors import CpPlanError

app = typer.Typer(
    name="cp-plan",
    help="Plan language-model shapes from measured runs: CompleteP vs μP vs SP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: flags without a type column, `--joint / --separate` as one choice
    # (tests/test_help.py reads every command's help)
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},  # on a wide terminal, room for the options' help
)
# The command groups, one module each (commands/); registered in this order, which --help keeps.
app.add_typer(runs.runs_app, name="runs")
app.add_typer(train.sweep_app, name="sweep")
app.add_typer(corpus.corpus_app, name="corpus")
app.command()(plan.hparams)
app.command()(train.train)
app.command("coord-check")(train.coord_check_cmd)
app.command()(fit.fit)
app.command()(plan.recommend)
app.command()(plan.predict)
app.command("next")(plan.next_runs)
app.command()(report.report)
app.command()(report.reproduce)


def run_captured(args) -> tuple[int, str, str]:
    """``cp-plan ARGS`` in this process as the console script runs it (:func:`main`), stdout and
    stderr captured: (exit code, stdout, stderr). For tests and scripts; an exception other than
    SystemExit (a bug: a traceback) propagates."""
    import contextlib
    import io
    from unittest import mock

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", ["cp-plan", *map(str, args)]), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def _stdout_reader_gone(exit_exc: SystemExit) -> bool:
    """Whether an exit came from a broken pipe on stdout: rich's Console raises SystemExit(1)
    while handling BrokenPipeError, and typer, meeting EPIPE, swaps stdout for click's
    PacifyFlushWrapper and exits 1; both are wrong for `cp-plan ... | head`."""
    return (isinstance(exit_exc.__context__, BrokenPipeError)
            or type(sys.stdout).__name__ == "PacifyFlushWrapper")


def main() -> None:
    """Console-script entry: run the app, turning CpPlanError into one line and exit 1.

    A reader that stops early (`| head -1`) is not an error: the broken pipe is handled as the
    Python docs advise (flush inside the handler, point stdout at devnull, exit 0). Running out
    of memory is one line too, not a traceback."""
    try:
        try:
            app()  # standalone: click reports usage errors itself and exits 2
        except SystemExit as exc:
            if _stdout_reader_gone(exc):
                raise BrokenPipeError from exc
            if exc.code in (0, None):
                sys.stdout.flush()  # a pipe closed after the last write surfaces here, not at exit
            raise
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        except (OSError, ValueError, AttributeError):
            pass  # stdout is not a file (tests capture it)
        sys.exit(0)
    except CpPlanError as exc:
        if os.environ.get("CP_PLAN_DEBUG"):
            raise
        print_error(str(exc))
        sys.exit(1)
    except OSError as exc:  # a path the file system refuses: too long, missing, a folder, no permission, full
        if os.environ.get("CP_PLAN_DEBUG"):
            raise
        from planner.fileio import os_error_message

        print_error(os_error_message(exc, what=None))
        sys.exit(1)
    except MemoryError:
        if os.environ.get("CP_PLAN_DEBUG"):
            raise
        print_error("out of memory: the request needs more memory than this machine has; ask for less "
             "(a smaller --params or --flops, fewer --bootstrap refits, or fewer runs via --where)")
        sys.exit(1)

if __name__ == "__main__":
    main()
