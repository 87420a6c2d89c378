"""Least privilege that holds: sudo entries known to give a root shell are refused unless justified.

The located refusals of single entries (``journalctl -u x``, ``less``, ``vi``,
``find``, ``bash``, ``emergency_user: root``) are data-driven cases in
``tests/cases/specs``; here: the whole deny list, the opt-in, and the
rendered sudoers line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.core.errors import InputError
from builder.release.render import render_all
from builder.release.spec import load_spec
from builder.release.sudo_policy import SHELL_ESCAPES, shell_escape
from tests.conftest import ROOT, require_tool

EXAMPLE = (ROOT / "images/example.yaml").read_text()
LINE = "      - /usr/bin/journalctl --no-pager -u deploy-agent\n"


@pytest.mark.parametrize("program", sorted(SHELL_ESCAPES))
def test_every_listed_program_is_refused(program: str) -> None:
    assert shell_escape(f"/usr/bin/{program} x") is not None
    assert shell_escape(f"/usr/local/sbin/{program}") is not None


@pytest.mark.parametrize(
    "command",
    ["/usr/bin/python3", "/usr/bin/python3.12 -c x", "/usr/bin/perl5.36", "/usr/bin/lua5.4",
     "/usr/bin/journalctl", "/usr/bin/journalctl -u x -f", "/bin/systemctl status x",
     "/bin/systemctl --no-pager edit x"],
)  # fmt: skip
def test_refused(command: str) -> None:
    assert shell_escape(command) is not None


@pytest.mark.parametrize(
    "command",
    ["/usr/bin/journalctl --no-pager -u x", "/bin/systemctl --no-pager restart x",
     "/usr/bin/id", "/usr/sbin/service-ctl restart", "/usr/bin/lessons"],
)  # fmt: skip
def test_allowed(command: str) -> None:
    assert shell_escape(command) is None


NARROWER = "grant a narrower command, or write the entry as a mapping with allow_shell_escape"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/usr/bin/less /var/log/syslog",
         ("it is a pager, and a pager runs commands (!sh)", NARROWER)),
        ("less", ("it is a pager, and a pager runs commands (!sh)", NARROWER)),
        ("/usr/bin/python3.11 -m http.server",
         ("it is a shell or an interpreter: it runs anything", NARROWER)),
        ("/usr/bin/find / -name x", ("find -exec runs any command", NARROWER)),
        ("/bin/systemctl edit x", ("systemctl edit opens an editor", "grant the exact change instead")),
        ("/bin/systemctl --no-pager edit x",
         ("systemctl edit opens an editor", "grant the exact change instead")),
        ("/usr/bin/journalctl -u x",
         ("journalctl opens a pager (less) without --no-pager, and a pager runs commands (!sh)",
          "add --no-pager: /usr/bin/journalctl --no-pager -u x")),
    ],
)  # fmt: skip
def test_refusal_says_why_and_what_to_grant(command: str, expected: tuple[str, str]) -> None:
    assert shell_escape(command) == expected


def test_only_the_program_name_counts() -> None:
    # the directory does not make a program safe, and an argument naming one does not make it unsafe
    assert shell_escape("/opt/less/bin/id") is None
    assert shell_escape("/usr/bin/id /usr/bin/less") is None
    assert shell_escape("/usr/bin/id edit") is None
    assert shell_escape("   ") is None


def _spec(tmp_path: Path, entry: str) -> Path:
    assert LINE in EXAMPLE
    (tmp_path / "images").mkdir()
    path = tmp_path / "images/example.yaml"
    path.write_text(EXAMPLE.replace(LINE, entry))
    return path


def test_a_justified_opt_in_is_accepted(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, '      - {command: /usr/bin/less /var/log/syslog, '
                                     'allow_shell_escape: "read-only triage; NOEXEC blocks !sh"}\n'))  # fmt: skip
    assert "/usr/bin/less /var/log/syslog" in spec.scope("ssh-emergency").sudo


def test_an_opt_in_needs_both_fields(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing required key 'allow_shell_escape'"):
        load_spec(_spec(tmp_path, "      - {command: /usr/bin/less /var/log/syslog}\n"))


def test_rendered_sudoers_carry_noexec_and_pass_visudo(tmp_path: Path) -> None:
    visudo = require_tool("visudo")
    spec = load_spec(ROOT / "images/example.yaml")
    sudoers = render_all(spec, None).files["sudoers"]
    rules = [line for line in sudoers.decode().splitlines() if " ALL=(root) " in line]
    # the scope's commands may start nothing; the session recorder (run by sshd's ForceCommand)
    # is the one rule without NOEXEC: it must start `script` and the user's shell
    assert rules == [
        "breakglass ALL=(root) NOPASSWD: BREAKGLASS_RECORD",
        "breakglass ALL=(root) NOPASSWD: NOEXEC: /usr/bin/systemctl --no-pager restart "
        "deploy-agent, /usr/bin/journalctl --no-pager -u deploy-agent, "
        "/usr/bin/journalctl --no-pager -n 1",
    ]
    path = tmp_path / "breakglass"
    path.write_bytes(sudoers)
    r = subprocess.run([visudo, "-c", "-q", "-f", str(path)], capture_output=True, text=True,
                       check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
