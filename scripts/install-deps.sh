#!/usr/bin/env bash
# Installs the Debian packages the tests drive for real (a software TPM,
# ...) when they are missing, and downloads the Go modules. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# command -> Debian package
declare -A need=(
  [swtpm]=swtpm
  [swtpm_setup]=swtpm-tools
  [tpm2_startup]=tpm2-tools
  [curl]=curl
  [cryptsetup]=cryptsetup-bin
  [losetup]=mount
  [mkfs.ext4]=e2fsprogs
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [umoci]=umoci
  [gpg]=gpg
  [gpg-agent]=gpg-agent
  [qemu-system-x86_64]=qemu-system-x86
  [modprobe]=kmod
  [containerd]=containerd
  [runc]=runc
  [python3]=python3
  [busybox]=busybox-static
  [cpio]=cpio
  [gcc]=gcc
  # A Kubernetes node (internal/testutil/k8stest).
  [etcd]=etcd-server
  [iptables]=iptables
  [conntrack]=conntrack
  [ip]=iproute2
  [nsenter]=util-linux
  # The node installer's systemd paths, against a systemd in a test container.
  [systemctl]=systemd
  # The KBS dashboard's browser test (chromedp drives it headless).
  [chromium]=chromium
  [redis-server]=redis-server
  [tc]=iproute2
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# The guest kernel of the qemu sandbox (make guest) and its modules.
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || missing+=(linux-image-cloud-amd64)
# The CNI plugins of the test node's pod network.
[ -e /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# OVMF firmware: SNP launch digests are computed from Debian's build in tests.
[ -e /usr/share/OVMF/OVMF_CODE.fd ] || missing+=(ovmf)
# Static glibc: coco-agent (libcontainer's nsenter is C) in the guest image.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
# PostgreSQL: the shared KBS store's tests start private clusters with its
# initdb (not on PATH).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# GNU time: peak RSS of the image pull benchmark's child processes.
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
  else
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
go mod download
# cosign, sigstore's own tool, signs images in the signature tests (built
# from source: the first time takes minutes).
if ! command -v cosign >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/cosign" ]; then
  echo "install-deps: go install cosign"
  go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
fi
