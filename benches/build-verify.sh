#!/usr/bin/env bash
# benches/build-verify.sh: a benchmark (not a test) of `kbundle build` and `kbundle verify`
# against plain tools, on the same loopback mirror. No internet needed.
#
# Usage:
#   benches/build-verify.sh                 # everything, ~2-5 minutes, ~13 GB of temp disk at peak
#   REPEAT=5 benches/build-verify.sh        # runs of each small step (a, b; median shown, default 3)
#   BIG_MIB=0 benches/build-verify.sh       # skip the large bundle (c)
#   BIG_MIB=2048 benches/build-verify.sh    # size of each of the two big files (default 1536)
#   WORK=/scratch KEEP=1 benches/build-verify.sh   # temp dir under /scratch, kept at the end
#
# What it does:
#   0. builds target/release/kbundle and the serve-mirror example (the tests' support code as
#      a binary), which builds the fake upstream tree of tests/it/support/upstream.rs for
#      manifests/kubernetes-v1.34.3.toml (real Debian binaries when installed, else tiny
#      stand-ins), serves it on a loopback HTTP mirror, and serves the manifest's images
#      (small busybox-based stand-ins, ~1 MiB in all) from a loopback registry;
#   a. `kbundle build` with a cold cache (first without a lockfile: lock + download + pack;
#      then with the lockfile, again cold; then warm) versus `curl` of the same file URLs
#      (artifacts and checksum files, 4 in parallel like kbundle's default --jobs 4) followed
#      by `tar -c | zstd -T0 -3` (the images, ~1 MiB, are fetched by kbundle only);
#   b. `kbundle verify` of the archive and of the unpacked directory versus
#      `sha256sum -c SHA256SUMS` inside the unpacked directory (page cache warm);
#   c. a LARGE bundle: the same tree with kubeadm and kubelet (and their .sha256 files)
#      replaced by BIG_MIB MiB of random bytes each, so the bundle is >= 3 GiB; peak RSS of
#      kbundle build (cold cache), verify (archive and directory) and unpack, next to
#      curl + tar | zstd and sha256sum -c.
#
# Every step runs under /usr/bin/time -v (Debian package `time`, installed if missing when
# run as root) for its peak RSS; wall time is measured around it. Throughput is the bundle's
# payload (sum of its entries) or the bytes the plain tool handled, divided by wall time.
# Prints one table and exits 0; temp files are removed on exit (also on failure or ^C).
# Needs: cargo, curl, jq, zstd, GNU tar, coreutils, and what the tests need for images
# (docker-registry, skopeo, umoci, busybox-static); openssl makes the random data faster.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIG_MIB=${BIG_MIB:-1536}
KEEP=${KEEP:-0}
MANIFEST_NAME=kubernetes-v1.34.3
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- tools -----------------------------------------------------------------------------
need_pkgs=()
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
for t in curl jq zstd; do command -v "$t" >/dev/null || need_pkgs+=("$t"); done
if ((${#need_pkgs[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing ${need_pkgs[*]}"
        apt-get install -y -qq "${need_pkgs[@]}" >/dev/null || {
            apt-get update -qq >/dev/null && apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
        }
    else
        die "missing ${need_pkgs[*]}: apt-get install ${need_pkgs[*]}"
    fi
fi
[[ $(/usr/bin/time -v true 2>&1) == *"Maximum resident set size"* ]] || die "/usr/bin/time is not GNU time"

# --- temp dir and cleanup ----------------------------------------------------------------
WORK_PARENT=${WORK:-${TMPDIR:-/tmp}}
mkdir -p "$WORK_PARENT"
W=$(mktemp -d "$WORK_PARENT/kbundle-bench.XXXXXX")
SERVER_PIDS=() # serve-mirror processes started here
SERVER_FDS=()  # the write ends of their stdin: closing one stops that server cleanly
stop_servers() {
    local fd pid
    for fd in "${SERVER_FDS[@]}"; do
        exec {fd}>&- 2>/dev/null || true
    done
    SERVER_FDS=()
    for pid in "${SERVER_PIDS[@]}"; do
        # serve-mirror exits (and stops its registry) when its stdin closes; give it time.
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SERVER_PIDS=()
}
cleanup() {
    local rc=$?
    stop_servers
    if [[ $KEEP == 1 ]]; then
        log "kept $W"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------------------
log "cargo build --release (kbundle, serve-mirror example)"
(cd "$REPO" && cargo build --release --quiet --bin kbundle --example serve-mirror)
TARGET=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
KB=$TARGET/release/kbundle
SERVE=$TARGET/release/examples/serve-mirror
[[ -x $KB && -x $SERVE ]] || die "no $KB or $SERVE after the build"

# start_mirror DIR [serve-mirror options]: serves DIR (and the manifest's images) until
# stop_servers; sets MIRROR_URL and MARGS (kbundle's --mirror arguments).
start_mirror() {
    local dir=$1 out ctl pid fd line
    shift
    out=$(mktemp "$W/mirror.XXXXXX")
    ctl=$(mktemp -u "$W/ctl.XXXXXX")
    mkfifo "$ctl"
    "$SERVE" "$dir" "$@" --images "$W/m/$MANIFEST_NAME.toml" <"$ctl" >"$out" 2>"$out.err" &
    pid=$!
    exec {fd}>"$ctl"
    SERVER_PIDS+=("$pid")
    SERVER_FDS+=("$fd")
    for _ in $(seq 1 1200); do
        if grep -qx READY "$out"; then
            MIRROR_URL=$(head -n1 "$out")
            MARGS=()
            while read -r line; do
                [[ $line == READY ]] || MARGS+=(--mirror "$line")
            done < <(tail -n +2 "$out")
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$out.err" >&2
            return 1
        fi
        sleep 0.1
    done
    die "serve-mirror did not start"
}

# --- measurements ------------------------------------------------------------------------
ROWS=()
SEP=$'\x1f' # field separator in ROWS (labels contain '|')
# measure LABEL BYTES CMD...: runs CMD REPEAT times under /usr/bin/time -v (running the
# shell code in $BEFORE, untimed, before each run) and records the median wall time and the
# largest peak RSS.
measure() {
    local label=$1 bytes=$2
    shift 2
    local tf t0 t1 i walls=() rss=0 r
    tf=$(mktemp "$W/time.XXXXXX")
    for ((i = 0; i < ${N:-1}; i++)); do
        [[ -z ${BEFORE:-} ]] || eval "$BEFORE"
        log "$label${N:+ (run $((i + 1))/$N)}"
        t0=$(date +%s%N)
        if ! /usr/bin/time -v -o "$tf" "$@" >"$W/last.out" 2>"$W/last.err"; then
            cat "$W/last.out" "$W/last.err" >&2
            die "$label failed: $*"
        fi
        t1=$(date +%s%N)
        walls+=($(((t1 - t0) / 1000000)))
        r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
        ((r > rss)) && rss=$r
    done
    rm -f "$tf"
    local median
    median=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    ROWS+=("$label$SEP$median$SEP$bytes$SEP$rss")
}
section() { ROWS+=("#$1"); }

# Sum of the entries of a bundle (archive or directory).
payload_bytes() { "$KB" inspect --json "$1" | jq '[.entries[].size] | add'; }

# url_list MIRROR_URL FILE: "dest url" lines for every artifact (bundle layout) and checksum
# file of the manifest, on the mirror.
url_list() {
    "$KB" list --json "$W/m/$MANIFEST_NAME.toml" | jq -r '
        (.files[] | "\(.path) \(.url)"),
        ([.files[] | .checksum.url // empty] | unique[] | "checksums/\(split("/") | .[-2:] | join("-")) \(.)")' |
        sed -e "s#https://dl.k8s.io#$1/dl.k8s.io#" -e "s#https://github.com#$1/github.com#" >"$2"
}

# The plain-tools baseline, as commands for measure.
CURL=(bash -c 'cd "$1" && xargs -P4 -n2 curl -sSf --create-dirs -o <"$2"' _)
TARZ=(bash -c 'tar -C "$1" -cf - "$2" | zstd -T0 -3 -q -f -o "$3"' _ "$W/curl" "$MANIFEST_NAME" "$W/curl.tar.zst")
SUMS=(bash -c 'cd "$1" && sha256sum -c --quiet SHA256SUMS' _)

mkdir -p "$W/m"
cp "$REPO/manifests/$MANIFEST_NAME.toml" "$W/m/"
# The mirror's runc.sha256sum is clear-signed by the test key (tests/it/support/pgp.rs).
printf '\n[upstream-keys]\nrunc = "%s"\n' "$REPO/tests/it/fixtures/pgp/test-signer.pub.asc" >>"$W/m/$MANIFEST_NAME.toml"

log "building the upstream tree"
if start_mirror "$W/up" --tree real 2>/dev/null; then
    PAYLOAD=real
else
    log "real Debian binaries missing: tiny stand-ins (numbers will be tiny)"
    stop_servers
    rm -rf "$W/up"
    start_mirror "$W/up" --tree tiny
    PAYLOAD=tiny
fi
URL=$MIRROR_URL
url_list "$URL" "$W/urls"
# build_cmd OUT CACHE: the kbundle build command line, in BUILD.
build_cmd() { BUILD=("$KB" build "$W/m/$MANIFEST_NAME.toml" --out "$1" --cache "$2" --quiet "${MARGS[@]}"); }
LOCK=$W/m/$MANIFEST_NAME.lock

# --- (a) build vs curl + tar | zstd --------------------------------------------------------
REPEAT=${REPEAT:-3}
N=$REPEAT
hdr=${#ROWS[@]}
section "(a) build"
build_cmd "$W/out0" "$W/cache0"
BEFORE='rm -rf "$W/out0" "$W/cache0" "$LOCK"' measure "kbundle build: no lock, cold cache" 0 "${BUILD[@]}"
ARCHIVE=$W/out0/$MANIFEST_NAME.tar.zst
PAY=$(payload_bytes "$ARCHIVE")
ROWS[-1]=${ROWS[-1]/${SEP}0${SEP}/$SEP$PAY$SEP}
ROWS[hdr]="#(a) build, $PAYLOAD upstream tree, $(numfmt --to=iec "$PAY")B payload, loopback mirror, median of $N"
build_cmd "$W/out1" "$W/cache1"
BEFORE='rm -rf "$W/out1" "$W/cache1"' measure "kbundle build: lockfile, cold cache" "$PAY" "${BUILD[@]}"
build_cmd "$W/out2" "$W/cache1"
BEFORE='rm -rf "$W/out2"' measure "kbundle build: lockfile, warm cache" "$PAY" "${BUILD[@]}"
cmp -s "$ARCHIVE" "$W/out1/$MANIFEST_NAME.tar.zst" || die "two cold builds differ"
cmp -s "$ARCHIVE" "$W/out2/$MANIFEST_NAME.tar.zst" || die "cold and warm builds differ"
rm -rf "$W/cache0" "$W/cache1" "$W/out1" "$W/out2"
BEFORE='rm -rf "$W/curl"; mkdir -p "$W/curl/$MANIFEST_NAME"' \
    measure "curl (same URLs, 4 parallel)" "$PAY" "${CURL[@]}" "$W/curl/$MANIFEST_NAME" "$W/urls"
CURLED=$(du -sb "$W/curl" | cut -f1)
measure "tar -c | zstd -T0 -3" "$CURLED" "${TARZ[@]}"
rm -rf "$W/curl" "$W/curl.tar.zst"

# --- (b) verify vs sha256sum -c ------------------------------------------------------------
section "(b) verify, $(numfmt --to=iec "$(stat -c %s "$ARCHIVE")")B archive, median of $N"
BEFORE='rm -rf "$W/unpacked"' measure "kbundle unpack" "$PAY" "$KB" unpack --quiet "$ARCHIVE" "$W/unpacked"
DIR=$W/unpacked/$MANIFEST_NAME
measure "kbundle verify ARCHIVE" "$PAY" "$KB" verify "$ARCHIVE"
measure "kbundle verify DIR" "$PAY" "$KB" verify "$DIR"
measure "sha256sum -c SHA256SUMS (DIR)" "$PAY" "${SUMS[@]}" "$DIR"
rm -rf "$W/unpacked"

# --- (c) large bundle: peak RSS ----------------------------------------------------------
N=1
if ((BIG_MIB > 0)); then
    log "large tree: kubeadm and kubelet of $BIG_MIB MiB each"
    cp -a "$W/up" "$W/big"
    kd="$W/big/dl.k8s.io/release/v1.34.3/bin/linux/amd64"
    for bin in kubeadm kubelet; do
        if command -v openssl >/dev/null; then
            openssl enc -aes-128-ctr -nosalt -pass "pass:kbundle-$bin" -pbkdf2 -in /dev/zero 2>/dev/null |
                head -c "$((BIG_MIB << 20))" >"$kd/$bin" || true
        else
            head -c "$((BIG_MIB << 20))" /dev/urandom >"$kd/$bin"
        fi
        [[ $(stat -c %s "$kd/$bin") == $((BIG_MIB << 20)) ]] || die "could not write $kd/$bin"
        sha256sum "$kd/$bin" | cut -c1-64 | tr -d '\n' >"$kd/$bin.sha256"
    done
    stop_servers
    start_mirror "$W/big"
    BURL=$MIRROR_URL
    url_list "$BURL" "$W/bigurls"
    rm -f "$LOCK"
    hdr=${#ROWS[@]}
    section "(c) large bundle"
    build_cmd "$W/bigout" "$W/bigcache"
    measure "kbundle build: no lock, cold cache" 0 "${BUILD[@]}"
    BIGA=$W/bigout/$MANIFEST_NAME.tar.zst
    BPAY=$(payload_bytes "$BIGA")
    ROWS[-1]=${ROWS[-1]/${SEP}0${SEP}/$SEP$BPAY$SEP}
    ROWS[hdr]="#(c) large bundle, $(numfmt --to=iec "$BPAY")B payload, $(numfmt --to=iec "$(stat -c %s "$BIGA")")B archive, one run"
    rm -rf "$W/bigcache"
    measure "kbundle verify ARCHIVE" "$BPAY" "$KB" verify "$BIGA"
    measure "kbundle unpack" "$BPAY" "$KB" unpack --quiet "$BIGA" "$W/bigun"
    measure "kbundle verify DIR" "$BPAY" "$KB" verify "$W/bigun/$MANIFEST_NAME"
    measure "sha256sum -c SHA256SUMS (DIR)" "$BPAY" "${SUMS[@]}" "$W/bigun/$MANIFEST_NAME"
    rm -rf "$W/bigun"
    mkdir -p "$W/curl/$MANIFEST_NAME"
    measure "curl (same URLs, 4 parallel)" "$BPAY" "${CURL[@]}" "$W/curl/$MANIFEST_NAME" "$W/bigurls"
    CURLED=$(du -sb "$W/curl" | cut -f1)
    measure "tar -c | zstd -T0 -3" "$CURLED" "${TARZ[@]}"
    rm -rf "$W/curl" "$W/curl.tar.zst" "$W/bigout" "$W/big"
fi

# --- table -------------------------------------------------------------------------------
echo
echo "kbundle $("$KB" --version | awk '{print $2}'), $(nproc) cores, $PAYLOAD upstream, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
printf '%-40s %10s %12s %12s\n' "step" "wall s" "MiB/s" "max RSS MiB"
printf '%-40s %10s %12s %12s\n' "----" "------" "-----" "-----------"
for r in "${ROWS[@]}"; do
    if [[ $r == \#* ]]; then
        echo "${r#\#}"
        continue
    fi
    IFS=$SEP read -r label ms bytes rss <<<"$r"
    awk -v l="$label" -v ms="$ms" -v b="$bytes" -v rss="$rss" 'BEGIN {
        s = ms / 1000.0
        tp = (s > 0 && b > 0) ? sprintf("%.0f", b / 1048576 / s) : "-"
        printf "  %-38s %10.2f %12s %12.1f\n", l, s, tp, rss / 1024.0
    }'
done
