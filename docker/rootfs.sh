#!/usr/bin/env bash
# Prepares the agent image's build context: `rootfs/` (the binary, the shared libraries it
# links, read from ldd so they are the ones it was built against, CA certificates, a user
# and a group for uid/gid 65532) and `data/` (the data dir, which the Dockerfile copies
# owned by that user). The Dockerfile copies both into `FROM scratch`: nothing else is in
# the image.
#
#   cargo build --release
#   docker/rootfs.sh target/release/mcp-orchestration docker
#   docker build -t mcp-orchestration docker
#
# Why not a static binary: glibc's static getaddrinfo needs its NSS libraries at run time
# anyway (git remotes and registries are names to resolve), and no musl toolchain is
# assumed. The libraries come from the host that built the binary, so they match it.
set -euo pipefail
# Whatever the caller's umask, the image's files must be readable by its user.
umask 022
bin=${1:?usage: rootfs.sh BINARY CONTEXT_DIR}
context=${2:?usage: rootfs.sh BINARY CONTEXT_DIR}
out=$context/rootfs

rm -rf "$out" "$context/data"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp" "$out/var/lib" "$context/data"
install -m 0755 "$bin" "$out/usr/local/bin/mcp-orchestration"

# Every library ldd names (and the loader), at the same path.
ldd "$bin" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
done

if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
fi
cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
mcp:x:65532:65532:mcp-orchestration:/var/lib/mcp-orchestration:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
mcp:x:65532:
GROUP
echo 'hosts: files dns' >"$out/etc/nsswitch.conf"
chmod 1777 "$out/tmp"
chmod 0700 "$context/data"
