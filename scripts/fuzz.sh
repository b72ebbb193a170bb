#!/usr/bin/env bash
#
# scripts/fuzz.sh - coverage-guided fuzzing of flmount's parsers of untrusted
# input with cargo-fuzz (libFuzzer), on a nightly toolchain:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
#   layer     the layer reader and the tree (uncompressed tar bytes)
#   extract   extraction of the bytes as two layers into a target, checking
#             that nothing beside the target is created, changed or linked
#   manifest  manifests, indexes, image configs, references, digests,
#             platforms
#   flist     the flist reader and the FUSE index built from it
#
# Each target runs SECONDS (default 120) on one core, from a corpus in
# fuzz/corpus/TARGET: seeds generated here (scripts/lib/fuzz_seeds.py, and an
# flist packed by flmount) plus what earlier runs found. Not committed. The
# checks themselves are in fuzz/checks.rs, shared with tests/robustness.rs.
#
# A crash leaves its input in fuzz/artifacts/TARGET/. Fix the bug, then copy
# the input to fuzz/regressions/TARGET/ (tests/robustness.rs runs every file
# there on stable Rust, in CI). The script exits 1 when a target crashed.
#
# It prints a table: target, executions, executions/s, corpus entries, coverage
# (libFuzzer's `cov`), crashes.
#
# Needs: a nightly toolchain (`cargo +nightly`), cargo-fuzz (installed with
# `cargo install cargo-fuzz --locked` when missing), python3, and root for the
# extract target's device nodes and owners (it runs unprivileged too, with
# those skipped).

set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
source "$here/lib/testbed.sh"
testbed_trap

seconds=${1:-120}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(layer extract manifest flist)
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "SECONDS must be a positive integer, not '$seconds'" >&2; exit 2; }

cargo +nightly --version >/dev/null 2>&1 || {
	echo "fuzz.sh needs a nightly Rust toolchain (rustup toolchain install nightly)" >&2
	exit 2
}
if ! cargo fuzz --version >/dev/null 2>&1; then
	log "installing cargo-fuzz"
	cargo install cargo-fuzz --locked
fi

corpus=$repo/fuzz/corpus
testbed_mktemp seeds flmount-fuzz-seeds
python3 "$here/lib/fuzz_seeds.py" "$seeds"
mkdir -p "$corpus"/{layer,extract,manifest,flist}
# Seeds join the corpus (replacing older versions of themselves); what
# earlier runs found stays.
add_seeds() { # add_seeds FROM_DIR TO_DIR
	local f
	for f in "$1"/*; do
		cmp -s -- "$f" "$2/$(basename "$f")" || cp -- "$f" "$2/"
	done
}
add_seeds "$seeds/layer" "$corpus/layer"
add_seeds "$seeds/layer" "$corpus/extract"
add_seeds "$seeds/manifest" "$corpus/manifest"
if [[ ! -e $corpus/flist/seed.fl ]]; then
	log "packing a seed flist"
	(cd "$repo" && cargo build --quiet)
	mkdir -p "$seeds/tree/d" && printf 'hello\n' >"$seeds/tree/d/f" && ln -s d/f "$seeds/tree/l"
	ln "$seeds/tree/d/f" "$seeds/tree/hard" && head -c 300000 /dev/urandom >"$seeds/tree/big"
	"$repo/target/debug/flmount" -q -workdir "$seeds/work" pack -flist "$corpus/flist/seed.fl" \
		-store "dir://$seeds/chunks" "$seeds/tree"
fi

cd "$repo/fuzz"
log "building the fuzz targets"
cargo +nightly fuzz build
failed=0
report=()
started=$seeds/started # crash inputs newer than this are this run's
touch "$started"
for t in "${targets[@]}"; do
	log "fuzzing $t for ${seconds}s"
	out=$seeds/$t.log
	rc=0
	cargo +nightly fuzz run "$t" "$corpus/$t" -- \
		-max_total_time="$seconds" -rss_limit_mb=1024 -timeout=20 -print_final_stats=1 \
		>"$out" 2>&1 || rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)
	entries=$(find "$corpus/$t" -type f | wc -l)
	crashes=$(find "$repo/fuzz/artifacts/$t" -type f -newer "$started" 2>/dev/null | wc -l)
	if [[ $rc -ne 0 ]]; then
		failed=1
		echo "---- $t failed (exit $rc); the end of its log:" >&2
		tail -40 "$out" >&2
	fi
	report+=("| $t | ${runs:-?} | ${rate:-?} | $entries | ${cov:-?} | $crashes |")
done
echo
echo "| target | executions | per second | corpus | coverage | crash inputs |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${report[@]}"
exit $failed
