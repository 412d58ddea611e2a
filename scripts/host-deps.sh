#!/usr/bin/env bash
# Install the Debian packages pyro's builds and tests need, if any is missing.
# Idempotent and quick when everything is there already.
set -euo pipefail
PACKAGES=(
  qemu-system-x86 qemu-utils            # the VMM (microvm, TCG/KVM) and qemu-img for overlays
  mmdebstrap e2fsprogs                  # root filesystems: debootstrap-like tree -> mkfs.ext4 -d
  linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev xz-utils  # guest kernel
  musl-tools cpio                       # the static guest agent and its initramfs
  docker-registry                       # a real OCI registry on loopback for tests
  zstd iproute2 nftables iptables       # layer compression; network plumbing (nft, iptables fallback)
  strace                                # dist-check proves nothing reads the source checkout
  python3 python3-venv                  # Debian's optimised CPython for the venv (see Makefile)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "host-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "host-deps: not root; install these packages first: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
