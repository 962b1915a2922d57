"""The `rollout` command line: the parser, the settings, and the dispatch to a command.

Exit codes: 0 done · 1 failed or refused (controller unreachable, command rejected, a store
down) · 2 bad input (usage, invalid plan, bad KEY=VALUE, invalid settings).
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable, Sequence
from typing import Any, Final

from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from rollout.cli import commands
from rollout.cli.errors import EXIT_BAD_INPUT, CliError
from rollout.cli.flags import cmd_flags_set, cmd_flags_show
from rollout.cli.plan_check import add_parser as add_plan_check
from rollout.cli.plan_check import cmd_plan_check
from rollout.cli.render import print_json
from rollout.cli.replay import add_parser as add_replay
from rollout.cli.replay import cmd_replay
from rollout.cli.simulate import add_parser as add_simulate
from rollout.cli.simulate import cmd_simulate
from rollout.settings import RolloutSettings, settings_help

Handler = Callable[[argparse.Namespace, RolloutSettings, Console], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main(argv)` returns its exit code."""

    def error(self, message: str) -> Any:  # argparse's signature is NoReturn
        raise CliError(f"{self.prog}: {message}\n{self.format_usage().strip()}", EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rollout",
        description="The AI cache rollout controller and its command line.",
        epilog=f"Exit codes: 0 done, 1 failed or refused, 2 bad input.\n\n{settings_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")

    run = sub.add_parser(
        "run", help="run the controller (evaluation loop + HTTP API)",
        epilog=settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--insecure-local", action="store_true",
                     help="start without an explicit REDIS_URL, PROMETHEUS_URL and command "
                          "credentials (a laptop only: defaults to 127.0.0.1, and nobody may "
                          "command it)")
    status = sub.add_parser("status", parents=[as_json], help="where the rollout is and why")
    status.add_argument("--watch", nargs="?", type=_positive_float, const=2.0, default=None,
                        metavar="SECONDS", help="redraw every SECONDS (default 2) until Ctrl-C")
    history = sub.add_parser("history", parents=[as_json], help="the decision log, newest first")
    history.add_argument("--limit", type=_positive_int, default=20, help="rows shown")
    history.add_argument("--transitions", action="store_true",
                         help="transitions and manual actions only, holds folded "
                              "('held 11x at l2 for: ...')")
    _add_steering(sub, as_json)

    evaluate = sub.add_parser("evaluate", parents=[as_json],
                              help="compute one cycle and print it")
    evaluate.add_argument("--dry-run", action="store_true",
                          help="required: nothing is applied or recorded")

    plan = sub.add_parser("plan", help="rollout plans")
    plan_sub = plan.add_subparsers(dest="plan_command", required=True, parser_class=_Parser)
    validate = plan_sub.add_parser("validate", parents=[as_json], help="check a plan file")
    validate.add_argument("file")
    add_plan_check(plan_sub, as_json)
    add_replay(sub, as_json)
    add_simulate(sub, as_json)

    flags = sub.add_parser("flags", help="the three rollout flags in the configured store")
    flags_sub = flags.add_subparsers(dest="flags_command", required=True, parser_class=_Parser)
    flags_sub.add_parser("show", parents=[as_json], help="what the flag store holds")
    set_flags = flags_sub.add_parser("set", parents=[as_json],
                                     help="write flags by hand (shadow, l2, l1_percent)")
    set_flags.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    set_flags.add_argument("--who", default=_default_who())
    set_flags.add_argument("--why", default="")
    return parser


def _add_steering(sub: Any, as_json: argparse.ArgumentParser) -> None:
    steering = _Parser(add_help=False)
    steering.add_argument("--who", default=_default_who(),
                          help="who is acting (default: $USER)")
    steering.add_argument("--why", required=True, help="why (logged and notified)")
    for name, text in (("pause", "stop the controller from acting (flags are left alone)"),
                       ("resume", "let the controller act again (also ends a post-rollback "
                                  "hold)")):
        sub.add_parser(name, parents=[steering, as_json], help=text)
    promote = sub.add_parser("promote", parents=[steering, as_json],
                             help="skip the bake and gates: go one stage forward")
    promote.add_argument("--full", action="store_true", help="go straight to the last stage")
    rollback = sub.add_parser("rollback", parents=[steering, as_json],
                              help="go one stage back (or to --to STAGE)")
    rollback.add_argument("--to", metavar="STAGE")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _default_who() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    # Nothing the CLI prints is rich markup or emoji codes: a reason like `[/oops]` or
    # `:warning:` is printed as written (the renderers also pass Text, see cli/render.py).
    out = Console(highlight=False, markup=False, emoji=False)
    err = Console(stderr=True, highlight=False, markup=False, emoji=False)
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        key = _command_key(args)
        # Checking a plan file needs no environment: a broken .env must not get in the way.
        settings = RolloutSettings.model_construct() if key in _NO_SETTINGS else _settings()
        return HANDLERS[key](args, settings, out)
    except CliError as exc:
        if args is not None and getattr(args, "json", False):
            # --json promises JSON on stdout, failures included (scripts parse it).
            print_json(out, {"error": exc.message, "exit_code": exc.code})
            return exc.code
        # soft_wrap: an error line stays one line for whoever greps it.
        err.print(Text(f"error: {exc.message}", style="bold red")
                  if exc.code != EXIT_BAD_INPUT else Text(exc.message, style="red"),
                  soft_wrap=True)
        return exc.code
    except SystemExit as exc:  # --help, or argparse's own exits
        return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _settings() -> RolloutSettings:
    try:
        return RolloutSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: "
            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise CliError(f"invalid settings: {problems}", EXIT_BAD_INPUT) from None


def _command_key(args: argparse.Namespace) -> str:
    if args.command == "plan":
        return f"plan {args.plan_command}"
    if args.command == "flags":
        return f"flags {args.flags_command}"
    return str(args.command)


_NO_SETTINGS: Final = frozenset({"plan validate", "plan check", "simulate"})
HANDLERS: Final[dict[str, Handler]] = {
    "run": commands.cmd_run,
    "status": commands.cmd_status,
    "history": commands.cmd_history,
    "pause": commands.cmd_steer,
    "resume": commands.cmd_steer,
    "promote": commands.cmd_steer,
    "rollback": commands.cmd_steer,
    "evaluate": commands.cmd_evaluate,
    "plan validate": commands.cmd_plan_validate,
    "plan check": cmd_plan_check,
    "replay": cmd_replay,
    "simulate": cmd_simulate,
    "flags show": cmd_flags_show,
    "flags set": cmd_flags_set,
}
