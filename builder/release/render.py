"""Render: Jinja2 templates into each agent's normal config, its dormant
break-glass overlay, and the system drop-ins (sshd, sudoers, systemd).

Templates come from repositories, so they run in Jinja's SandboxedEnvironment
with StrictUndefined: a template cannot reach Python internals, and a missing
variable is an error, never an empty string. Templates see public data only
(names, public keys, runtime paths); the build never holds plaintext.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from builder.core.errors import InputError
from builder.core.payload import AGENTS_DIR, RUNTIME_DIR
from builder.core.record import record
from builder.release.bundle import SealedBundle
from builder.release.spec import ImageSpec, template_where

SYSTEM_TEMPLATES = {
    "sshd": "system/sshd-breakglass.conf.j2",
    "sudoers": "system/sudoers-breakglass.j2",
    "expire_service": "system/breakglass-expire.service.j2",
    "expire_timer": "system/breakglass-expire.timer.j2",
}


@record
class Rendered:
    """Every rendered text, keyed by its payload path."""

    files: dict[str, bytes]


_OPTIONS: dict[str, Any] = {
    "undefined": jinja2.StrictUndefined,
    "autoescape": False,
    "keep_trailing_newline": True,
    "trim_blocks": True,
    "lstrip_blocks": True,
}


def environment(templates_dir: Path) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        bytecode_cache=_BytecodeCache(),
        **_OPTIONS,
    )


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Compiled templates in the user's cache, so a build does not compile them again
    (two thirds of rendering).

    Jinja keys an entry by the template's name, its file's path and a checksum of its
    source, and drops an entry of another Python; the folder's name covers the rest the
    code depends on: the Jinja version, the sandbox and these options. The folder is the
    user's own, as Python's ``__pycache__`` is. A cache that cannot be written only means
    compiling.
    """

    def __init__(self) -> None:
        import hashlib
        import sys

        from builder.release.runtime_payload import cache_dir

        tag = repr((jinja2.__version__, sys.version, SandboxedEnvironment.__name__, _OPTIONS))
        key = hashlib.sha256(tag.encode()).hexdigest()[:16]
        super().__init__(str(cache_dir("templates") / key), "%s.jinja")

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            super().dump_bytecode(bucket)
        except OSError:
            pass


def context(spec: ImageSpec, bundle: SealedBundle | None) -> dict[str, Any]:
    """The public facts every template may use. Without a bundle (``lint`` before ``seal``),
    credentials have no public part yet."""
    sealed = (
        {}
        if bundle is None
        else {(s.name, c.name): c for s in bundle.scopes for c in s.credentials}
    )
    credentials = {}
    for c in spec.credentials:
        public = sealed.get((c.scope, c.name))
        credentials[c.name] = {
            "name": c.name,
            "scope": c.scope,
            "kind": c.kind,
            "public": public.public if public else None,
            "fingerprint": public.fingerprint if public else None,
            "runtime_path": f"/{RUNTIME_DIR}/{c.scope}/{c.name}",
        }
    scopes = [
        {
            "name": s.name,
            "description": s.description,
            "max_ttl_seconds": s.max_ttl,
            "emergency_user": s.emergency_user,
            "sudo": list(s.sudo),
        }
        for s in spec.scopes
    ]
    return {
        "image": {"name": spec.name, "version": spec.version, "description": spec.description},
        "scopes": scopes,
        "credentials": credentials,
    }


def render_all(spec: ImageSpec, bundle: SealedBundle | None) -> Rendered:
    """Render every template of the image. Raises InputError naming the template, line and cause."""
    env = environment(spec.templates_dir)
    base = context(spec, bundle)
    scopes = {s["name"]: s for s in base["scopes"]}
    files: dict[str, bytes] = {}
    for agent in spec.agents:
        agent_context = {
            **base,
            "agent": {"name": agent.name, "scope": agent.scope, "config_name": agent.config_name},
            "scope": scopes[agent.scope],
            "vars": agent.vars,
        }
        for mode, template in (
            ("normal", agent.normal_template),
            ("breakglass", agent.breakglass_template),
        ):
            path = f"{AGENTS_DIR}/{agent.name}/{mode}/{agent.config_name}"
            files[path] = _render(
                env,
                spec.templates_dir,
                template,
                agent_context,
                partial(template_where, spec, agent, mode),
            )
    for key, template in SYSTEM_TEMPLATES.items():
        files[key] = _render(env, spec.templates_dir, template, base)
    return Rendered(files)


def _render(
    env: SandboxedEnvironment,
    root: Path,
    name: str,
    ctx: dict[str, Any],
    named_at: Callable[[], str | None] | None = None,
) -> bytes:
    """Render one template. Errors name the template file and line where the problem is
    (an included template's, if that is where it went wrong); a missing template named by
    the spec is reported at what ``named_at`` gives, the spec line that names it."""
    try:
        return env.get_template(name).render(ctx).encode("utf-8")
    except jinja2.TemplateNotFound as e:
        missing = str(e.name or name)
        # the spec names the top template; an include is named by the including template
        if missing != name:
            where = _where(e, root, name)
        else:
            where = (named_at() if named_at else None) or str(root / name)
        if _outside(missing):
            raise InputError(
                f"template '{missing}' is outside the templates folder", where=where
            ) from None
        raise InputError(f"template '{missing}' not found in {root}", where=where) from None
    except jinja2.TemplateSyntaxError as e:
        where = f"{e.filename or root / name}:{e.lineno}"
        raise InputError(f"template syntax error: {_clean(e.message)}", where=where) from None
    except jinja2.exceptions.SecurityError as e:
        raise InputError(
            f"template tried to leave the sandbox ({_clean(str(e))})", where=_where(e, root, name)
        ) from None
    except jinja2.UndefinedError as e:
        raise InputError(
            f"template uses an undefined variable ({_clean(e.message)})",
            where=_where(e, root, name),
        ) from None
    except jinja2.TemplateError as e:
        raise InputError(
            f"template error ({_clean(e.message)})", where=_where(e, root, name)
        ) from None


def _where(error: BaseException, root: Path, name: str) -> str:
    """``file:line`` of the innermost template frame in ``error``'s traceback.

    Jinja rewrites tracebacks so that template code shows as frames of the
    template file at its own line; without one, the template's path is all we know.
    """
    found = str(root / name)
    tb = error.__traceback__
    prefix = f"{root}/"
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(prefix):
            found = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def _outside(name: str) -> bool:
    return name.startswith("/") or ".." in name.replace("\\", "/").split("/")


def _clean(message: str | None) -> str:
    """Jinja's messages as one line without a trailing period, as our errors read."""
    return " ".join((message or "unknown problem").split()).rstrip(".")
