"""`rollout …`: run the controller, watch it, steer it, check a plan, read or set the flags.

    main.py      the parser, the settings and the dispatch (exit codes)
    client.py    the controller's HTTP API, as the CLI speaks it
    render.py    the terminal rendering of the status, the log and a dry run
    commands.py  run, status, history, pause/resume/promote/rollback, evaluate, plan validate
    flags.py     flags show / flags set
"""

from rollout.cli.main import main

__all__ = ["main"]
