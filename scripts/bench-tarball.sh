#!/usr/bin/env bash
# Times release packing on a synthetic slug: the `pack` example (tar-rs + flate2/zlib-rs at
# level 6 + two sha256s, one thread) against GNU `tar czf` (tar piped to `gzip -6`, two
# processes), 3 runs each, median reported.
#
#   scripts/bench-tarball.sh            # ~20k files, ~150 MB
#   FILES=5000 BINS=20 scripts/bench-tarball.sh
#   PACK=/path/to/pack scripts/bench-tarball.sh   # use a prebuilt binary
#
# The tree is generated with a fixed seed (python3), so every run packs the same bytes:
# FILES small text files (source-like tokens, log-normal sizes), BINS incompressible 1 MiB
# binaries, a few symlinks and executables, nested like node_modules.
set -euo pipefail

FILES=${FILES:-20000}
BINS=${BINS:-80}
RUNS=${RUNS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-tarball.XXXXXX")
trap 'rm -rf "$work"' EXIT

pack=${PACK:-}  # a prebuilt `pack` binary, or build it here
if [ -z "$pack" ]; then
    echo "building the pack example..." >&2
    cargo build --quiet --release --example pack --manifest-path "$root/Cargo.toml"
    target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    pack="$target_dir/release/examples/pack"
fi

echo "generating $FILES text files + $BINS binaries in $work/slug..." >&2
python3 - "$work/slug" "$FILES" "$BINS" <<'EOF'
import os, random, sys
root, nfiles, nbins = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(42)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 12)))
         for _ in range(3000)]
words += ["function", "return", "const", "let", "if", "else", "for", "import", "export",
          "require", "this", "null", "undefined", "true", "false", "=", "==", "=>", "{", "}",
          "(", ")", ";", ",", "."] * 40
lines = []
size = 0
while size < 8 << 20:
    line = "  " * rng.randint(0, 5) + " ".join(rng.choice(words) for _ in range(rng.randint(1, 14)))
    lines.append(line)
    size += len(line) + 1
corpus = ("\n".join(lines) + "\n").encode()
pkgs = max(1, nfiles // 50)
for i in range(nfiles):
    pkg = f"node_modules/pkg{i % pkgs:04d}"
    sub = ["lib", "dist", "src/util", "test/fixtures", ""][i % 5]
    d = os.path.join(root, pkg, sub)
    os.makedirs(d, exist_ok=True)
    n = min(int(rng.lognormvariate(7.6, 1.0)), 256 << 10)
    off = rng.randrange(0, len(corpus) - n)
    p = os.path.join(d, f"file{i}.js")
    with open(p, "wb") as f:
        f.write(corpus[off:off + n])
    if i % 97 == 0:
        os.chmod(p, 0o755)
    if i % 211 == 0:
        os.symlink(f"file{i}.js", os.path.join(d, f"alias{i}.js"))
os.makedirs(os.path.join(root, "bin"), exist_ok=True)
for i in range(nbins):
    with open(os.path.join(root, "bin", f"blob{i}.bin"), "wb") as f:
        f.write(rng.randbytes(1 << 20))
EOF
nfiles=$(find "$work/slug" -type f | wc -l)
tree_mb=$(du -sm --apparent-size "$work/slug" | cut -f1)
echo "tree: $nfiles files, $tree_mb MB" >&2

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
pack_s=$(median_seconds "$pack" "$work/slug" "$work/pack.tar.gz")
tar_s=$(median_seconds tar -C "$work/slug" -czf "$work/gnu.tar.gz" .)
plain_s=$(median_seconds tar -C "$work/slug" -cf "$work/gnu.tar" .)
ratio=$(echo "$pack_s / $tar_s" | bc -l)

printf 'pack: %s s  tar czf: %s s  ratio: %.2f\n' "$pack_s" "$tar_s" "$ratio"
printf 'sizes: pack %s bytes  tar czf %s bytes  (tar cf, no gzip: %s s, %s bytes)\n' \
    "$(stat -c %s "$work/pack.tar.gz")" "$(stat -c %s "$work/gnu.tar.gz")" \
    "$plain_s" "$(stat -c %s "$work/gnu.tar")"
