#!/usr/bin/env bash
# Builds Cocoon's VM guest into $OUT (default build/guest): the Debian cloud
# kernel (vmlinuz) and a reproducible initramfs (initramfs.cpio.gz) holding
# coco-init as /init, coco-agent, guest-components and the kernel modules
# the sandbox needs. Same commit, same kernel -> byte-identical output, so
# the launch measurement can be registered before any pod runs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/guest}
KERNEL=${KERNEL:-$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -1 || true)}
[ -n "$KERNEL" ] || { echo "build-guest: no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)" >&2; exit 1; }
KVER=${KERNEL#/boot/vmlinuz-}
# A fixed timestamp for every file: the commit's, or 0 outside git.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
# dm_crypt and the aes-xts pieces its templates ask for by name (no modprobe
# in the guest to load them on demand), and AF_ALG, through which cryptsetup
# encrypts LUKS2 keyslots: encrypted volumes (guest/cdh/securemount). ext4
# and sha256 are built in.
MODULES="virtio_pci virtio_console virtio_blk virtio_net virtio_rng vmw_vsock_virtio_transport overlay
  dm_crypt ecb xts aesni_intel algif_skcipher
  iptable_nat xt_REDIRECT xt_mark xt_tcpudp"
# Tools of encrypted volumes, with their libraries, from the Debian packages
# installed here (cryptsetup-bin, e2fsprogs). cryptsetup rather than a Go
# library: LUKS2 formatting needs its keyslot, JSON metadata and dm-crypt
# table handling, which no well-kept Go library offers (luks.go only opens
# LUKS2), and guest-components' data hub shells out to it too. Same
# packages, same bytes; with the modules they add ~12 MiB to the initramfs
# (~5 MiB gzipped: libcrypto and libc are most of it).
# The mesh's redirects (spiffe-workload-api --mesh): iptables' legacy backend (x_tables
# modules above, no nf_tables), with the extensions its rules name.
TOOLS="/usr/sbin/cryptsetup /usr/sbin/mke2fs /usr/sbin/xtables-legacy-multi"
XTABLES=/usr/lib/x86_64-linux-gnu/xtables

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{sbin,usr/local/bin,lib/modules,dev,proc,sys,run,tmp,etc}
ldflags="-s -w -buildid="
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$root/init" ./cmd/coco-init
# libcontainer's nsenter is C: a static glibc build.
CGO_ENABLED=1 go build -trimpath -tags "netgo osusergo" -ldflags "$ldflags -extldflags -static" \
  -o "$root/sbin/coco-agent" ./cmd/coco-agent 2> >(grep -v 'statically linked applications' >&2)
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$root/usr/local/bin/" \
  ./cmd/attestation-agent ./cmd/confidential-data-hub ./cmd/api-server-rest ./cmd/spiffe-workload-api
for m in $MODULES; do modprobe -S "$KVER" --show-depends "$m"; done |
  awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r ko; do
    cp "$ko" "$root/lib/modules/"
    basename "$ko" >> "$root/lib/modules/modules.order"
  done
for t in $TOOLS; do
  cp "$t" "$root/sbin/"
  ldd "$t" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
ln -s mke2fs "$root/sbin/mkfs.ext4"
ln -s xtables-legacy-multi "$root/sbin/iptables-restore"
mkdir -p "$root$XTABLES"
cp "$XTABLES"/libxt_{REDIRECT,mark,tcp,standard}.so "$root$XTABLES/"
printf 'root:x:0:0:root:/:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$OUT"
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --quiet --reproducible --owner=0:0) | gzip -9n > "$OUT/initramfs.cpio.gz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
cp "$KERNEL" "$OUT/vmlinuz"
(cd "$OUT" && sha256sum vmlinuz initramfs.cpio.gz > SHA256SUMS)
# The SNP launch digest to register before any pod runs (the qemu backend's
# default command line; runtime/sandbox/qemu.Cmdline). Debian ships no
# OvmfPkg/AmdSev firmware: pass one as OVMF=path.
CMDLINE=${CMDLINE:-"console=ttyS0 panic=-1 quiet cocoon.channel=serial"}
if [ -n "${OVMF:-}" ]; then
  go run ./cmd/cocoon-measure snp --ovmf "$OVMF" --kernel "$OUT/vmlinuz" --initrd "$OUT/initramfs.cpio.gz" \
    --append "$CMDLINE" --vcpus "${VCPUS:-1}" --vcpu-type "${VCPU_TYPE:-EPYC-v4}" -o json > "$OUT/measurement.json"
  echo "build-guest: SNP launch digest in $OUT/measurement.json"
fi
echo "build-guest: $OUT ($(du -h "$OUT/initramfs.cpio.gz" | cut -f1) initramfs, kernel $KVER)"
cat "$OUT/SHA256SUMS"
