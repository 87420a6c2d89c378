"""The console-script entry point.

``breakglass host ...`` runs on hosts, from sshd (``authorized-keys`` on
every login attempt) and timers, so its common command lines are answered
by ``builder.host.commands.fast_main`` before click, jinja2 or ruamel are
imported. It calls the same host functions as the click commands; anything
it does not recognise falls through to the full CLI. ``breakglass build``
likewise: a rebuild its record answers (``builder.release.build_record``)
ends before anything heavy loads, and the common command line runs without click.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["host"]:
        from builder.host.commands import fast_main

        try:
            code = fast_main(sys.argv[2:])
        except Exception:
            # sshd logs our stderr and reads keys from stdout: no traceback, no half answer;
            # the full command below settles the host and answers or fails in one line
            code = None
        if code is not None:
            sys.exit(code)
    if sys.argv[1:2] == ["build"]:
        from builder.release.build_record import fast_main as fast_build

        code = fast_build(sys.argv[2:])
        if code is not None:
            sys.exit(code)
    if sys.argv[1:2] == ["fleet"]:
        # pyinfra's parallel SSH runs on gevent: patch before anything imports socket or threading
        from gevent import monkey

        monkey.patch_all()
    from builder.cli import main as cli_main

    cli_main()
