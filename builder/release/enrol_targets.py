"""The optional ``enrol:`` block of a credential: which systems must accept its public part, and how.

Each target names inventory hosts (a group, a host name or a glob), a file on
those hosts, the line that enrols the credential in it, and optionally a
command that makes the system re-read the file::

    credentials:
      - name: deploy-token
        scope: agent-backup
        generate: token
        enrol:
          - hosts: deploy-services
            file: /etc/deploy/breakglass-tokens
            line: "breakglass {fingerprint}"
            reload: [systemctl, reload, deploy]
      - name: emergency-ssh-key
        scope: ssh-emergency
        generate: ssh-ed25519
        enrol:
          - hosts: bastions
            file: /home/ops/.ssh/authorized_keys      # line defaults to "{public}"

``line`` may use ``{public}``, ``{fingerprint}``, ``{name}``, ``{scope}`` and
``{kind}``: public parts only, never a secret. ``fleet enrol`` applies the
targets with pyinfra; this module only parses them.
"""

from __future__ import annotations

import string

from builder.core.record import record
from builder.core.yamlfile import Node

PLACEHOLDERS = ("public", "fingerprint", "name", "scope", "kind")
DEFAULT_LINE = "{public}"


@record
class EnrolTarget:
    hosts: str
    file: str
    line: str = DEFAULT_LINE
    reload: tuple[str, ...] = ()

    def render(self, **parts: str | None) -> str:
        """The line for one credential's public parts; raises KeyError for a part it lacks."""
        values = {k: v for k, v in parts.items() if v is not None}
        return self.line.format_map(values)


def parse_targets(node: Node, credential: str) -> tuple[EnrolTarget, ...]:
    """Parse a credential's ``enrol`` list; raises InputError naming file, line and column."""
    out = []
    for item in node.items(f"enrol of credential '{credential}'"):
        item.mapping("an enrol target", {"hosts", "file", "line", "reload"}, {"hosts", "file"})
        path = item.get("file").text("file")
        if not path.startswith("/") or "\n" in path or "/../" in f"{path}/":
            raise item.get("file").error("file must be an absolute path without '..'")
        line = item.get("line").text("line") if item.has("line") else DEFAULT_LINE
        if "\n" in line:
            raise item.get("line").error("line must be one line")
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(line) if f is not None}
        except ValueError as e:
            raise item.get("line").error(f"line is not a valid template ({e})") from None
        unknown = sorted(names - set(PLACEHOLDERS))
        if unknown:
            raise item.get("line").error(
                f"line uses unknown placeholder '{{{unknown[0]}}}' "
                f"(want {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
            )
        reload = item.get("reload").texts("reload") if item.has("reload") else ()
        out.append(EnrolTarget(item.get("hosts").text("hosts"), path, line, reload))
    return tuple(out)
