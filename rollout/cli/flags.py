"""`rollout flags show|set`: the three rollout flags in the configured store, read or written
by hand (logged in the decision log, with a warning when the controller will undo it)."""

from __future__ import annotations

import argparse
import asyncio
import difflib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.contract import LOCAL_FIELD_BY_FLAG
from rollout.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CliError
from rollout.cli.render import print_json
from rollout.core.flags import FlagSettings
from rollout.ports import FlagError, FlagWriter, StoreError
from rollout.records import FlagsRecord, LogEntry
from rollout.settings import RolloutSettings

FLAG_KEYS: Final = ("shadow", "l2", "l1_percent")
_TRUE: Final = frozenset({"1", "on", "true", "yes", "enabled"})
_FALSE: Final = frozenset({"0", "off", "false", "no", "disabled"})


class FlagsShown(BaseModel):
    store: str
    flags: FlagSettings


class FlagsWritten(BaseModel):
    store: str
    before: FlagSettings
    after: FlagSettings
    writes: list[str]
    warning: str | None = None


def cmd_flags_show(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    shown = asyncio.run(_read(settings))
    if args.json:
        print_json(out, shown)
        return EXIT_OK
    table = Table(title=Text(f"Flags in {shown.store}"))
    for column in ("key", "flag", "value"):
        table.add_column(column)
    names = {field: flag for flag, field in LOCAL_FIELD_BY_FLAG.items()}
    flags = shown.flags
    for key, value in (("shadow", flags.shadow), ("l2", flags.l2),
                       ("l1_percent", flags.l1_percent)):
        text = f"{value} %" if key == "l1_percent" else ("on" if value else "off")
        table.add_row(Text(key), Text(names.get(key, "")),
                      Text(text, style="green" if value else "dim"))
    out.print(table)
    return EXIT_OK


async def _read(settings: RolloutSettings) -> FlagsShown:
    writer = flag_writer(settings)
    try:
        return FlagsShown(store=writer.target, flags=await writer.read())
    except FlagError as exc:
        raise CliError(f"cannot read the flags from {writer.target}: {exc.message}") from None
    finally:
        await writer.aclose()


def parse_assignments(assignments: Sequence[str]) -> dict[str, bool | int]:
    """`shadow=on l1_percent=10` → {"shadow": True, "l1_percent": 10}; CliError(2) naming
    the field on anything else."""
    parsed: dict[str, bool | int] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise CliError(f"{item!r}: expected KEY=VALUE with KEY one of "
                           f"{', '.join(FLAG_KEYS)}", EXIT_BAD_INPUT)
        if key not in FLAG_KEYS:
            close = difflib.get_close_matches(key, FLAG_KEYS, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CliError(f"{key}: unknown flag key{hint}; use {', '.join(FLAG_KEYS)}",
                           EXIT_BAD_INPUT)
        if key in parsed:
            raise CliError(f"{key}: given twice", EXIT_BAD_INPUT)
        parsed[key] = _percent(raw) if key == "l1_percent" else _switch(key, raw)
    return parsed


def _percent(raw: str) -> int:
    try:
        percent = int(raw.removesuffix("%").strip())
    except ValueError:
        percent = -1
    if not 0 <= percent <= 100:
        raise CliError(f"l1_percent: must be a whole number from 0 to 100, got {raw!r}",
                       EXIT_BAD_INPUT)
    return percent


def _switch(key: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise CliError(f"{key}: must be on or off (1/0, true/false), got {raw!r}", EXIT_BAD_INPUT)


def cmd_flags_set(args: argparse.Namespace, settings: RolloutSettings, out: Console) -> int:
    changes = parse_assignments(args.assignments)
    written = asyncio.run(_write(settings, changes, args.who, args.why))
    if args.json:
        print_json(out, written)
        return EXIT_OK
    if written.writes:
        out.print(Text(f"Wrote {len(written.writes)} change(s) to {written.store}:",
                       style="bold"))
        for write in written.writes:
            out.print(Text(f"  {write}"))
    else:
        out.print(Text(f"Nothing to change: {written.store} already holds these flags."))
    out.print(Text(f"Flags now: {written.after.describe()}"))
    if written.warning:
        out.print(Text(written.warning, style="yellow"))
    return EXIT_OK


async def _write(settings: RolloutSettings, changes: Mapping[str, bool | int], who: str,
                 why: str) -> FlagsWritten:
    writer = flag_writer(settings)
    try:
        current = await writer.read()
        merged = {"shadow": current.shadow, "l2": current.l2,
                  "l1_percent": current.l1_percent} | dict(changes)
        desired = FlagSettings(shadow=bool(merged["shadow"]), l2=bool(merged["l2"]),
                               l1_percent=int(merged["l1_percent"]))
        result = await writer.apply(desired)
    except FlagError as exc:
        raise CliError(f"cannot write the flags to {writer.target}: {exc.message}") from None
    finally:
        await writer.aclose()
    written = FlagsWritten(store=writer.target, before=result.before, after=result.after,
                           writes=[str(w) for w in result.writes])
    warning = await _note_in_log(settings, written, who, why)
    return written.model_copy(update={"warning": warning})


async def _note_in_log(settings: RolloutSettings, written: FlagsWritten, who: str,
                       why: str) -> str | None:
    """Log the hand edit in the decision log and say what the controller will do about it.
    Best effort: the flags are already written, a state Redis outage must not hide that."""
    from rollout.composition import build_state_store  # noqa: PLC0415

    store = build_state_store(settings)
    try:
        snapshot = await store.load()
        if written.writes:
            await store.append_unfenced(LogEntry(
                kind="flags-set", at=datetime.now(UTC), by=who or "?",
                reason=why or "set by hand with `rollout flags set`",
                flags=FlagsRecord(before=written.before, desired=written.after,
                                  writes=tuple(written.writes), applied=True),
            ))
    except StoreError:
        return None
    finally:
        await store.aclose()
    state = snapshot.state
    if state is None or state.is_paused or not written.writes:
        return None
    return (f"The controller is not paused: its next cycle restores {state.stage_name}'s flags "
            "and reports the drift. Run `rollout pause` first to keep a manual setting.")


def flag_writer(settings: RolloutSettings) -> FlagWriter:
    from rollout.composition import build_flag_writer  # noqa: PLC0415

    try:
        return build_flag_writer(settings)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
