#!/usr/bin/env bash
# Side by side, in one run: the `sandbox` and `vault` benchmarks of REV and
# of this working tree, run alternately ROUNDS times each, every figure's
# median across rounds printed for both with the ratio this/REV (below 1 is
# faster here). REV is built in a temporary worktree with its own target
# directory (target/bench-prev, seeded from target/release so the
# dependencies are not rebuilt): two checkouts of one workspace sharing a
# target directory get the same artifact names and mtime-based
# fingerprints, so one build silently stands in for the other.
#
#   scripts/bench-compare.sh REV [ROUNDS]     (needs OpenBao for `vault`:
#                                             scripts/bootstrap.sh installs it)
set -euo pipefail
rev=${1:?usage: scripts/bench-compare.sh REV [ROUNDS]}
rounds=${2:-3}
cd "$(dirname "$0")/.."
root=$PWD
export KMSHOST_BAO="${KMSHOST_BAO:-$root/target/peers-venv/bin/bao}"
tmp=$(mktemp -d)
# A kept checkout of REV (BENCH_PREV_TREE) saves rebuilding it next time.
if [ -n "${BENCH_PREV_TREE:-}" ]; then
  ln -s "$BENCH_PREV_TREE" "$tmp/prev"
  trap 'rm -rf "$tmp"' EXIT
else
  git worktree add -q --detach "$tmp/prev" "$rev"
  trap 'git worktree remove --force "$tmp/prev"; rm -rf "$tmp"' EXIT
fi

# REV's target directory: the dependencies as this tree built them, but
# nothing of kmshost's own (its fingerprints name this tree's files).
prev_target="$root/target/bench-prev"
if [ ! -d "$prev_target/release" ] && [ -d "$root/target/release" ]; then
  mkdir -p "$prev_target"
  cp -a "$root/target/release" "$prev_target/"
fi
rm -rf "$prev_target"/release/.fingerprint/kmshost-* "$prev_target"/release/build/kmshost-*

# The executable of bench $2 built from the tree at $1 into target dir $3,
# copied to $tmp so no later build replaces it.
exe() {
  local built
  built=$( (cd "$1" && CARGO_TARGET_DIR="$3" cargo bench -p kmshost --bench "$2" \
    --no-run --message-format=json 2>/dev/null) |
    python3 -c '
import json, sys
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable") \
            and j["target"]["name"] == sys.argv[1]:
        print(j["executable"])' "$2" | tail -1)
  [ -n "$built" ] || { echo "bench-compare: bench $2 of $1 did not build" >&2; exit 1; }
  cp "$built" "$tmp/$2.$4"
  echo "$tmp/$2.$4"
}

for bench in sandbox vault; do
  old=$(exe "$tmp/prev" "$bench" "$prev_target" old)
  new=$(exe "$root" "$bench" "$root/target" new)
  for i in $(seq "$rounds"); do
    (cd "$tmp/prev/host" && "$old" --bench) >"$tmp/$bench.old.$i" 2>&1
    (cd "$root/host" && "$new" --bench) >"$tmp/$bench.new.$i" 2>&1
  done
done

python3 - "$tmp" "$rounds" "$rev" <<'EOF'
import re, statistics, sys
tmp, rounds, rev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# A figure: a decimal number, or a whole one with a time unit ("32 B" and
# "5000 calls" are parts of labels).
num = re.compile(r"(-?\d+\.\d+|\d+(?=\s*(?:µs|ms)))\s*(µs|ms|x)?")

def figures(path):
    """'section | label #k' -> the k-th figure of each line, labelled by
    the text before its first figure and the section header above it."""
    out, section = {}, ""
    for line in open(path, encoding="utf-8"):
        line = line.rstrip()
        if line.endswith(":") and not num.search(line):
            section = line.split("(")[0].strip()
            continue
        found = list(num.finditer(line))
        if not found or found[0].start() == 0:
            continue
        label = line[: found[0].start()].strip().rstrip(":")
        if "target" in line:  # the target column is a constant
            found = found[:1] if "/" not in label else found[:2]
        for k, m in enumerate(found):
            key = f"{section} | {label}" if section else label
            out[f"{key} #{k + 1}"] = (float(m.group(1)), m.group(2) or "")
    return out

for bench in ("sandbox", "vault"):
    runs = {side: [figures(f"{tmp}/{bench}.{side}.{i}") for i in range(1, rounds + 1)]
            for side in ("old", "new")}
    print(f"\n== {bench}: {rev} vs this tree, medians of {rounds} alternating runs")
    print(f"{'figure':<78} {rev[:10]:>10} {'this':>10} {'this/rev':>9}")
    for label in runs["new"][0]:
        if not all(label in r for side in runs.values() for r in side):
            continue
        o = statistics.median(r[label][0] for r in runs["old"])
        n = statistics.median(r[label][0] for r in runs["new"])
        unit = runs["new"][0][label][1]
        ratio = f"{n / o:9.3f}" if o else "        -"
        print(f"{label[:78]:<78} {o:>8.3f}{unit:<2} {n:>8.3f}{unit:<2} {ratio}")
EOF
