#!/usr/bin/env bash
# Install the Debian tools breakglass and its tests drive, when any is missing.
set -euo pipefail

# command -> Debian package
declare -A want=(
  [age]=age
  [ssh-keygen]=openssh-client
  [sshd]=openssh-server
  [umoci]=umoci
  [skopeo]=skopeo
  [packer]=packer
  [debootstrap]=debootstrap
  [bwrap]=bubblewrap
  [visudo]=sudo
  [chromium]=chromium
  [faketime]=faketime
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${want[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
