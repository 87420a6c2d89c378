"""Release-path commands: keygen, lint, seal, build, verify, bump, inspect.

Heavy modules are imported inside each command so host commands start fast.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from builder.core.errors import InputError

SPEC = click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@click.command()
@click.option("--name", required=True, help="The approver's name, as it will appear in specs.")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the key files.",
)
@JSON
def keygen(name: str, out: Path, as_json: bool) -> None:
    """Create an approver's age identity and ssh-ed25519 signing key (files mode 0600)."""
    from builder.release.keygen import keygen as make

    keys = make(name, out, now())
    emit(
        as_json,
        {
            "name": keys.name,
            "identity": str(keys.identity_path),
            "signing_key": str(keys.signing_key_path),
            "recipient": keys.recipient,
            "signing_key_public": keys.signing_key,
        },
        f"# keep {keys.identity_path} and {keys.signing_key_path} offline; paste into the spec:\n"
        + keys.spec_lines().rstrip(),
    )


@click.command()
@SPEC
@JSON
def lint(spec: Path, as_json: bool) -> None:
    """Validate a spec: schema, policy rules and every template."""
    from builder.release.build import load_bundle
    from builder.release.render import render_all
    from builder.release.spec import load_spec

    parsed = load_spec(spec)
    bundle = None
    notes = []
    if parsed.sealed_path.exists():
        bundle, _ = load_bundle(parsed)
    else:
        notes.append("not sealed yet")
    rendered = render_all(parsed, bundle)
    emit(
        as_json,
        {"spec": str(spec), "ok": True, "templates": len(rendered.files), "notes": notes},
        f"{spec}: ok ({len(parsed.scopes)} scopes, {len(parsed.approvers)} approvers, "
        f"{len(rendered.files)} templates)" + "".join(f"; {n}" for n in notes),
    )


@click.command()
@SPEC
@click.option(
    "--rotate", is_flag=True, help="Replace an existing sealed bundle with fresh credentials."
)
@JSON
def seal(spec: Path, rotate: bool, as_json: bool) -> None:
    """Seal the spec's credentials: the only command that sees plaintext."""
    from builder.release.render import render_all
    from builder.release.seal import seal as do_seal
    from builder.release.spec import load_spec

    parsed = load_spec(spec)
    render_all(parsed, None)  # a template error should stop us before new credentials exist
    result = do_seal(parsed, now(), rotate=rotate)
    emit(
        as_json,
        {
            "bundle": str(result.bundle_path),
            "enrolment": str(result.enrolment_path),
            "scopes": [s.name for s in result.bundle.scopes],
            "rotate_by": result.bundle.rotate_by,
        },
        f"sealed {len(result.bundle.scopes)} scopes -> {result.bundle_path}\n"
        f"public parts for enrolment -> {result.enrolment_path}\n"
        f"rotate by {result.bundle.rotate_by}",
    )


@click.command()
@SPEC
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("dist"),
    show_default=True,
    help="Output directory; the image goes to OUT/NAME/VERSION/.",
)
@click.option(
    "--sign-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="OpenSSH private key (or .pub with the key in ssh-agent).",
)
@click.option(
    "--backend", type=click.Choice(["oci", "packer"]), default="oci", show_default=True,
    help="oci: an OCI image layout; packer: VM/cloud images through Packer.",
)  # fmt: skip
@click.option("--tar", "with_tar", is_flag=True, help="Also write the layout as oci.tar.")
@click.option("--dry-run", is_flag=True, help="Print the payload plan; write nothing.")
@JSON
def build(
    spec: Path,
    out: Path,
    sign_key: Path | None,
    backend: str,
    with_tar: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Build a signed, reproducible image from the spec and its sealed bundle (never decrypts)."""
    from builder.release.build import build_oci, plan
    from builder.release.spec import load_spec

    parsed = load_spec(spec)
    planned = plan(parsed, backend=backend)
    if dry_run:
        files = [{"path": f.path, "digest": f.digest, "mode": oct(f.mode)} for f in planned.files]
        emit(
            as_json,
            {"files": files, "manifest_digest": planned.manifest_digest},
            "\n".join(f"{f['mode']} {f['digest']} {f['path']}" for f in files),
        )
        return
    from builder.release.build_record import record, result_output

    if backend == "packer":
        from builder.release.build_packer import build_packer

        result = build_packer(planned, out, sign_key, on_event=_show_packer_progress)
    else:
        result = build_oci(planned, out, sign_key)
    if with_tar and backend == "oci":
        from builder.release.oci import export_tar

        tar_path = result.image_dir / "oci.tar"
        if not tar_path.exists():
            export_tar(result.image_dir / "oci", tar_path, mtime=planned.source_date_epoch)
    if backend == "oci":
        record(planned, result, out, sign_key)
    doc = {
        "image_digest": result.image_digest,
        "manifest_digest": result.manifest_digest,
        "signed": result.signed,
        "changed": result.changed,
    }
    click.echo(result_output(as_json, parsed.name, parsed.version, result.image_dir, doc))


def _show_packer_progress(event: Any) -> None:
    """Packer's own UI lines, on stderr so that --json stdout stays machine-readable."""
    for line in event.text.splitlines():
        click.echo(f"packer: {line}", err=True)


@click.command()
@click.argument("image_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--allowed-signers", required=True, type=click.Path(path_type=Path, dir_okay=False),
    help="OpenSSH allowed-signers file naming the trusted release keys.",
)  # fmt: skip
@JSON
def verify(image_dir: Path, allowed_signers: Path, as_json: bool) -> None:
    """Check an image's signature, every blob and payload digest, the bundle and the policy."""
    from builder.release.verify import verify_image

    result = verify_image(image_dir, allowed_signers)
    emit(
        as_json,
        {
            "ok": True,
            "signer": result.signer,
            "image_digest": result.image_digest,
            "manifest_digest": result.manifest.digest,
            "files_checked": result.files_checked,
        },
        f"ok: {result.manifest.name} {result.manifest.version} signed by {result.signer}; "
        f"{result.files_checked} payload files match",
    )


@click.command()
@SPEC
@click.option("--major", is_flag=True, help="Raise MAJOR; MINOR and PATCH become 0.")
@click.option("--minor", is_flag=True, help="Raise MINOR; PATCH becomes 0.")
@click.option("--patch", is_flag=True, help="Raise PATCH (the default).")
@JSON
def bump(spec: Path, major: bool, minor: bool, patch: bool, as_json: bool) -> None:
    """Raise the spec's version (patch by default), keeping every other byte."""
    from builder.release.bump import bump as do_bump

    chosen = [name for name, on in (("major", major), ("minor", minor), ("patch", patch)) if on]
    if len(chosen) > 1:
        # click's shared flag_value lets the last flag win silently; a release must not guess
        raise InputError(
            f"--{' and --'.join(chosen)} conflict: give at most one",
            hint="--major for breaking changes, --minor for features, --patch (default) for fixes",
        )
    old, new = do_bump(spec, chosen[0] if chosen else "patch")
    emit(as_json, {"spec": str(spec), "old": old, "new": new}, f"{spec}: {old} -> {new}")


@click.command()
@click.argument("image_dir", type=click.Path(path_type=Path, file_okay=False))
@JSON
def inspect(image_dir: Path, as_json: bool) -> None:
    """Show version, digest, scopes, approvers, thresholds, TTL caps and rotation dates."""
    from builder.release.inspect import render_text, summary

    if not image_dir.is_dir():
        raise InputError("not a directory", where=str(image_dir))
    info = summary(image_dir, now())
    emit(as_json, info, render_text(info))


def register(cli: click.Group) -> None:
    """Add this module's commands to the top-level group."""
    for command in (keygen, lint, seal, build, verify, bump, inspect):
        cli.add_command(command)
