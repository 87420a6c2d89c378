"""The console-script entry point.

``breakglass host authorized-keys USER`` runs on every SSH login attempt
(sshd's AuthorizedKeysCommand), so it is answered before click and the
command modules are imported; anything it does not handle by itself falls
through to the full CLI.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:3] == ["host", "authorized-keys"]:
        from builder.host.authorized_keys import fast_main

        try:
            code = fast_main(sys.argv[3:])
        except Exception:
            # sshd logs our stderr and reads keys from stdout: no traceback, no half answer;
            # the full command below settles the host and answers or fails in one line
            code = None
        if code is not None:
            sys.exit(code)
    if sys.argv[1:2] == ["fleet"]:
        # pyinfra's parallel SSH runs on gevent: patch before anything imports socket or threading
        from gevent import monkey

        monkey.patch_all()
    from builder.cli import main as cli_main

    cli_main()
