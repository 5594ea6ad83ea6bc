#!/usr/bin/env bash
# benches/images-install.sh: a benchmark (not a test) of the image path, on loopback.
#   a. kbundle pulling the v1.34.3 image set (files already cached) versus `skopeo copy`
#      of the same images, one after another, from the same registry into an OCI layout;
#   b. `kbundle install --phase prepare` of the v1.34.3 bundle into a scratch root (verify,
#      unpack, host files, binaries, containerd config, image import through a temporary
#      containerd) versus `ctr images import` of the same images into a running containerd.
# The registry holds the test suite's small busybox-based stand-ins (about 1 MiB in all),
# so these figures are dominated by per-image and per-process overhead, not bandwidth.
# Usage: benches/images-install.sh   (needs what .ci/run installs; run as root)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/kbundle-bench-img.XXXXXX")
FD=""; PID=""; CPID=""
cleanup() {
    [[ -n $FD ]] && exec {FD}>&- 2>/dev/null || true
    [[ -n $PID ]] && { for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done; kill "$PID" 2>/dev/null || true; }
    [[ -n $CPID ]] && { kill "$CPID" 2>/dev/null || true; wait "$CPID" 2>/dev/null || true; }
    grep " $W/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

(cd "$REPO" && cargo build --release --quiet --bin kbundle --example serve-mirror)
KB=$REPO/target/release/kbundle
mkdir -p "$W/m" && cp "$REPO/manifests/kubernetes-v1.34.3.toml" "$W/m/"
mkfifo "$W/ctl"
"$REPO/target/release/examples/serve-mirror" "$W/tree" --tree real --images "$W/m/kubernetes-v1.34.3.toml" <"$W/ctl" >"$W/serve.out" 2>"$W/serve.err" &
PID=$!
exec {FD}>"$W/ctl"
for _ in $(seq 1 1200); do grep -qx READY "$W/serve.out" && break; sleep 0.1; done
MARGS=(); while read -r l; do [[ $l == READY ]] || MARGS+=(--mirror "$l"); done < <(tail -n +2 "$W/serve.out")
REG=$(printf '%s\n' "${MARGS[@]}" | grep '^registry.k8s.io=' | sed 's|.*=http://||; s|/registry.k8s.io||')

# a. image pull: warm the file cache, then drop the image blobs and pull them again.
"$KB" build "$W/m/kubernetes-v1.34.3.toml" --out "$W/out0" --cache "$W/cache" -q "${MARGS[@]}" >/dev/null
mapfile -t REFS < <("$KB" inspect --json "$W/out0/kubernetes-v1.34.3.tar.zst" | jq -r '.images[].ref')
"$KB" inspect --json "$W/out0/kubernetes-v1.34.3.tar.zst" | jq -r '.entries[] | select(.kind=="blob") | .sha256' |
    while read -r d; do rm -f "$W/cache/blobs/sha256/$d"; done
t0=$(now); "$KB" build "$W/m/kubernetes-v1.34.3.toml" --out "$W/out1" --cache "$W/cache" -q "${MARGS[@]}" >/dev/null; t1=$(now)
kb_pull=$(secs "$t0" "$t1")
# The same build with every blob cached: what packing costs, to subtract.
t0=$(now); "$KB" build "$W/m/kubernetes-v1.34.3.toml" --out "$W/out2" --cache "$W/cache" -q "${MARGS[@]}" >/dev/null; t1=$(now)
kb_warm=$(secs "$t0" "$t1")
t0=$(now)
for r in "${REFS[@]}"; do
    skopeo copy -q --src-tls-verify=false --override-arch amd64 "docker://$REG/$r" "oci:$W/skopeo:$r" >/dev/null
done
t1=$(now); sk_pull=$(secs "$t0" "$t1")

# b. prepare versus ctr import.
R=$W/node; mkdir -p "$R/etc"
printf 'ID="rocky"\nVERSION_ID="10.0"\nPRETTY_NAME="Rocky Linux 10.0"\n' >"$R/etc/os-release"
"$KB" example-config >"$W/cluster.toml"
t0=$(now)
"$KB" install --bundle "$W/out1/kubernetes-v1.34.3.tar.zst" --config "$W/cluster.toml" --root "$R" --node worker1 \
    --phase prepare --skip-preflight commands >"$W/prepare.log"
t1=$(now); prep=$(secs "$t0" "$t1")
C=$W/ctd; mkdir -p "$C"
printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\n[grpc]\n  address = "%s/c.sock"\n' "$C" "$C" "$C" >"$C/config.toml"
containerd --config "$C/config.toml" >"$C/log" 2>&1 &
CPID=$!
for _ in $(seq 1 100); do ctr --address "$C/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
U=$W/un; "$KB" unpack "$W/out1/kubernetes-v1.34.3.tar.zst" "$U" -q >/dev/null
t0=$(now)
tar -C "$U/kubernetes-v1.34.3/images" -cf - . | ctr --address "$C/c.sock" -n k8s.io images import - >/dev/null
t1=$(now); ctr_imp=$(secs "$t0" "$t1")

printf '\n%-58s %8s\n' "step (${#REFS[@]} images)" "seconds"
printf '%-58s %8.2f\n' "kbundle build, files cached, image blobs cold" "$kb_pull"
printf '%-58s %8.2f\n' "kbundle build, everything cached (packing only)" "$kb_warm"
printf '%-58s %8.2f\n' "  => kbundle's image pull (difference)" "$(echo "$kb_pull - $kb_warm" | bc)"
printf '%-58s %8.2f\n' "skopeo copy of the same images, one by one" "$sk_pull"
printf '%-58s %8.2f\n' "kbundle install --phase prepare (whole phase)" "$prep"
printf '%-58s %8.2f\n' "ctr images import of the same layout (import only)" "$ctr_imp"
