#!/usr/bin/env bash
# The release workflow's steps, runnable (and tested) outside GitHub Actions.
#
#   scripts/release.sh build     build SPEC reproducibly, sign it with the release key, write
#                                DIST/allowed_signers from that key, verify, rebuild elsewhere
#                                and compare bytes, inspect
#   scripts/release.sh sigstore  add a keyless sigstore bundle beside each manifest in DIST
#                                (needs an OIDC identity: GitHub Actions' id-token)
#
# Environment: RELEASE_SSH_KEY (the private key's text; a CI secret) or RELEASE_SSH_KEY_FILE;
# SPEC (images/example.yaml), DIST (dist), BREAKGLASS (.venv/bin/breakglass),
# PYTHON (.venv/bin/python), SIGNER (the principal name, release).
set -euo pipefail

SPEC=${SPEC:-images/example.yaml}
DIST=${DIST:-dist}
BREAKGLASS=${BREAKGLASS:-.venv/bin/breakglass}
PYTHON=${PYTHON:-.venv/bin/python}
SIGNER=${SIGNER:-release}
SIGSTORE_VERSION=4.5.1
DEMO_PUB=examples/keys/release.pub

die() { echo "release: error: $1" >&2; [ -z "${2:-}" ] || echo "hint: $2" >&2; exit 2; }

build() {
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  key=$work/release
  if [ -n "${RELEASE_SSH_KEY:-}" ]; then
    (umask 077; printf '%s\n' "$RELEASE_SSH_KEY" > "$key")
  elif [ -n "${RELEASE_SSH_KEY_FILE:-}" ]; then
    (umask 077; cp "$RELEASE_SSH_KEY_FILE" "$key")
  else
    die "no release key" "set the RELEASE_SSH_KEY secret (an OpenSSH private key)"
  fi
  chmod 600 "$key"
  pub=$(ssh-keygen -y -f "$key" 2>/dev/null) || die "RELEASE_SSH_KEY is not a readable OpenSSH private key"
  read -r type blob _ <<<"$pub"
  if [ -f "$DEMO_PUB" ] && [ "$(cut -d' ' -f1,2 "$DEMO_PUB")" = "$type $blob" ]; then
    die "refusing to release with the demo key from examples/keys" "set RELEASE_SSH_KEY to the real release key"
  fi

  mkdir -p "$DIST"
  # who may sign releases: the key in use, for the manifest namespace only
  printf '%s namespaces="breakglass-manifest" %s %s\n' "$SIGNER" "$type" "$blob" > "$DIST/allowed_signers"

  image=$("$BREAKGLASS" build "$SPEC" --out "$DIST" --sign-key "$key" --json \
    | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["image_dir"])')
  "$BREAKGLASS" verify "$image" --allowed-signers "$DIST/allowed_signers"
  # reproducible: a second build elsewhere gives the same bytes
  "$BREAKGLASS" build "$SPEC" --out "$work/again" --sign-key "$key" --json > /dev/null
  diff -r "$image" "$work/again/${image#"$DIST"/}" > /dev/null \
    || { echo "release: error: a second build differs from the first (not reproducible)" >&2; exit 1; }
  "$BREAKGLASS" inspect "$image"
  echo "released $image, signed by $SIGNER; trust file: $DIST/allowed_signers"
}

sigstore() {
  manifests=("$DIST"/*/*/breakglass-manifest.json)
  [ -f "${manifests[0]}" ] || die "no manifest under $DIST to sign" "run scripts/release.sh build first"
  # its own venv: sigstore's dependencies stay out of breakglass's
  venv=$(mktemp -d)
  trap 'rm -rf "$venv"' EXIT
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "sigstore==$SIGSTORE_VERSION"
  for m in "${manifests[@]}"; do
    "$venv/bin/python" -m sigstore sign --bundle "$m.sigstore.json" "$m"
  done
}

case "${1:-}" in
  build) build ;;
  sigstore) sigstore ;;
  *) die "usage: scripts/release.sh build|sigstore" ;;
esac
