#!/bin/sh
# Scheduled rotation: what .github/workflows/rotate.yml runs, and what you can run by hand.
#
# For every spec in images/ (or the specs given as arguments): print its drift
# report against its enrolment file, then re-seal (`seal --rotate`) and bump
# each spec whose scopes are overdue, or burned on a host of $FLEET_INVENTORY
# when that is set. New plaintext exists only inside the breakglass process.
# Exit 1, with a summary, when a due scope has a credential supplied from
# outside. Writes changed=true|false to $GITHUB_OUTPUT when that is set.
set -eu

BREAKGLASS=${BREAKGLASS:-breakglass}
BUMP=${BUMP:-patch}

if [ "$#" -eq 0 ]; then
    for f in images/*.yaml; do
        case "$f" in *.sealed.yaml) continue ;; esac
        [ -e "$f" ] && set -- "$@" "$f"
    done
fi
if [ "$#" -eq 0 ]; then
    echo "rotate-due: no specs found under images/" >&2
    exit 2
fi

for spec in "$@"; do
    enrolment="${spec%.yaml}.enrolment.json"
    if [ -e "$enrolment" ]; then
        echo "== drift: $spec"
        # drift exits 1 when anything is out of sync or due; the rotation below acts on it
        "$BREAKGLASS" drift "$spec" --enrolment "$enrolment" || true
    fi
done

echo "== rotation"
status=0
if [ -n "${FLEET_INVENTORY:-}" ]; then
    "$BREAKGLASS" fleet rotate-due --bump "$BUMP" --inventory "$FLEET_INVENTORY" "$@" || status=$?
else
    "$BREAKGLASS" fleet rotate-due --bump "$BUMP" "$@" || status=$?
fi

changed=false
if command -v git >/dev/null 2>&1 && git rev-parse --git-dir >/dev/null 2>&1; then
    [ -n "$(git status --porcelain -- "$@" images/ 2>/dev/null)" ] && changed=true
fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
    echo "changed=$changed" >> "$GITHUB_OUTPUT"
fi
exit "$status"
