#!/usr/bin/env bash
# Times cooking a release tarball from a ~300 MB app tree: the `pack` example (tar-rs, the
# parallel deterministic gzip of src/release/pgzip.rs at level 6, two sha256s) against GNU
# `tar czf` (gzip -6) and `tar -I pigz -cf` on the same tree in the same run, $RUNS runs each,
# median reported, with MB/s (tree bytes / seconds), output size and the ratios to `tar czf`.
#
#   scripts/bench-cook.sh                       # ~150 MB text in ~45k files + ~150 MB random
#   TEXT_MB=50 BIN_MB=50 scripts/bench-cook.sh  # smaller tree
#   CHUNKS="256 1024 4096" scripts/bench-cook.sh   # also time these pgzip chunk sizes (KiB)
#   PACK=/path/to/pack scripts/bench-cook.sh    # use a prebuilt binary
#
# The tree is generated with a fixed seed (python3), so every run packs the same bytes:
# source-like text files with log-normal sizes nested like node_modules (some executables and
# symlinks), two large bundled text files, and incompressible binaries (many 1 MiB blobs and
# two 25 MiB ones), about half the bytes incompressible.
set -euo pipefail

TEXT_MB=${TEXT_MB:-150}
BIN_MB=${BIN_MB:-150}
RUNS=${RUNS:-3}
CHUNKS=${CHUNKS:-}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-cook.XXXXXX")
trap 'rm -rf "$work"' EXIT

if ! command -v pigz >/dev/null; then
    echo "installing pigz..." >&2
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y pigz >/dev/null || { apt-get update >/dev/null && apt-get install -y pigz >/dev/null; }
    else
        sudo apt-get install -y pigz >/dev/null
    fi
fi

pack=${PACK:-} # a prebuilt `pack` binary, or build it here
if [ -z "$pack" ]; then
    echo "building the pack example..." >&2
    cargo build --quiet --release --example pack --manifest-path "$root/Cargo.toml"
    target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    pack="$target_dir/release/examples/pack"
fi

echo "generating ~$TEXT_MB MB of text + ~$BIN_MB MB of binaries in $work/slug..." >&2
python3 - "$work/slug" "$TEXT_MB" "$BIN_MB" <<'EOF'
import os, random, sys
root, text_mb, bin_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(42)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 12)))
         for _ in range(3000)]
words += ["function", "return", "const", "let", "if", "else", "for", "import", "export",
          "require", "this", "null", "undefined", "true", "false", "=", "==", "=>", "{", "}",
          "(", ")", ";", ",", "."] * 40
lines, size = [], 0
while size < 16 << 20:
    line = "  " * rng.randint(0, 5) + " ".join(rng.choice(words) for _ in range(rng.randint(1, 14)))
    lines.append(line)
    size += len(line) + 1
corpus = ("\n".join(lines) + "\n").encode()

def put(path, data, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)

# Two big bundles (10 MiB each), then small files up to the text budget.
text_budget = text_mb << 20
for i in range(2):
    n = min(10 << 20, text_budget // 4)
    off = rng.randrange(0, len(corpus) - n)
    put(os.path.join(root, "public", f"bundle{i}.js"), corpus[off:off + n])
    text_budget -= n
i, pkgs = 0, 900
while text_budget > 0:
    pkg = f"node_modules/pkg{i % pkgs:04d}"
    sub = ["lib", "dist", "src/util", "test/fixtures", ""][i % 5]
    n = min(int(rng.lognormvariate(7.6, 1.0)), 256 << 10, text_budget)
    off = rng.randrange(0, len(corpus) - n)
    d = os.path.join(root, pkg, sub)
    put(os.path.join(d, f"file{i}.js"), corpus[off:off + n], 0o755 if i % 97 == 0 else None)
    if i % 211 == 0:
        os.symlink(f"file{i}.js", os.path.join(d, f"alias{i}.js"))
    text_budget -= n
    i += 1

# Incompressible: two 25 MiB binaries, the rest as 1 MiB blobs.
bin_budget = bin_mb << 20
for j in range(2):
    n = min(25 << 20, bin_budget // 4)
    put(os.path.join(root, "vendor", f"engine{j}.so"), rng.randbytes(n), 0o755)
    bin_budget -= n
j = 0
while bin_budget > 0:
    n = min(1 << 20, bin_budget)
    put(os.path.join(root, "bin", f"blob{j}.bin"), rng.randbytes(n))
    bin_budget -= n
    j += 1
EOF
nfiles=$(find "$work/slug" -type f | wc -l)
tree_bytes=$(du -sb --apparent-size "$work/slug" | cut -f1)
tree_mb=$(echo "$tree_bytes / 1000000" | bc -l)
printf 'tree: %s files, %.1f MB (%s bytes); %s cores, load %s\n' "$nfiles" "$tree_mb" \
    "$tree_bytes" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"

# median_seconds CMD...: runs CMD $RUNS times, prints the median wall time in seconds.
median_seconds() {
    local times=() t0 t1
    for _ in $(seq "$RUNS"); do
        t0=$(date +%s.%N)
        "$@" >/dev/null
        t1=$(date +%s.%N)
        times+=("$(echo "$t1 - $t0" | bc -l)")
    done
    printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'
}

cat "$pack" >/dev/null # warm the binary; the tree is still in the page cache from generation
tar -C "$work/slug" -cf - . >/dev/null

tgz_s=$(median_seconds tar -C "$work/slug" -czf "$work/gnu.tar.gz" .)
tgz_b=$(stat -c %s "$work/gnu.tar.gz")

# row NAME SECONDS BYTES: one line of the table, ratios against `tar czf`.
row() {
    printf '%-22s %8.3f s %8.1f MB/s %12s bytes   speed x%.2f   size %.4f\n' "$1" "$2" \
        "$(echo "$tree_mb / $2" | bc -l)" "$3" "$(echo "$tgz_s / $2" | bc -l)" \
        "$(echo "$3 / $tgz_b" | bc -l)"
}

echo
echo "median of $RUNS runs; speed = tar czf time / time, size = bytes / tar czf bytes"
row "tar czf (gzip -6)" "$tgz_s" "$tgz_b"

pigz_s=$(median_seconds tar -C "$work/slug" -I pigz -cf "$work/pigz.tar.gz" .)
row "tar -I pigz -cf" "$pigz_s" "$(stat -c %s "$work/pigz.tar.gz")"

pack_s=$(median_seconds "$pack" "$work/slug" "$work/pack.tar.gz")
pack_b=$(stat -c %s "$work/pack.tar.gz")
row "pack" "$pack_s" "$pack_b"

one_s=$(PACK_THREADS=1 median_seconds "$pack" "$work/slug" "$work/pack1.tar.gz")
row "pack (1 thread)" "$one_s" "$(stat -c %s "$work/pack1.tar.gz")"
cmp -s "$work/pack.tar.gz" "$work/pack1.tar.gz" ||
    { echo "FAIL: pack output differs between 1 thread and the default" >&2; exit 1; }

for c in $CHUNKS; do
    c_s=$(PACK_CHUNK=$c median_seconds "$pack" "$work/slug" "$work/packc.tar.gz")
    row "pack (chunk $c KiB)" "$c_s" "$(stat -c %s "$work/packc.tar.gz")"
done

# The output is a plain .tar.gz: gzip's own check and GNU tar's listing agree.
gzip -t "$work/pack.tar.gz"
[ "$(tar -tzf "$work/pack.tar.gz" | grep -vc '^manifest.json$\|^app/$')" -eq \
  "$(tar -tzf "$work/gnu.tar.gz" | grep -vc '^\./$')" ] ||
    { echo "FAIL: entry counts differ between pack and tar czf" >&2; exit 1; }
echo
echo "pack sha256 $(sha256sum "$work/pack.tar.gz" | cut -d' ' -f1) (same with 1 thread; gzip -t and tar tzf ok)"
