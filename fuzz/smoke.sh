#!/bin/sh
# Smoke-fuzzes every target for N seconds (default 10: 5 targets, under a
# minute of fuzzing), starting from the seed corpus. Exits non-zero on the
# first crash, leak, timeout or out-of-memory; the input is kept under
# fuzz/artifacts/<target>/ (reproduce with `cargo fuzz run <target> <file>`).
#
# Usage: fuzz/smoke.sh [SECONDS]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it pass its nightly flags (-Zsanitizer).
set -eu

secs=${1:-10}
case $secs in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"

# One build for all targets: release, debug assertions and overflow checks,
# AddressSanitizer (cargo fuzz's defaults).
cargo fuzz build
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=target/$triple/release
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT INT TERM

for t in $(cargo fuzz list); do
	# New inputs go to a scratch directory; the seeds are only read.
	mkdir -p "$scratch/$t" "artifacts/$t"
	echo "== $t: ${secs}s"
	if ! "$bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		"$scratch/$t" "corpus/$t" >"$scratch/$t.log" 2>&1; then
		tail -n 60 "$scratch/$t.log" >&2
		echo "fuzz target $t failed; the input is under fuzz/artifacts/$t/" >&2
		echo "reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t artifacts/$t/<file>" >&2
		exit 1
	fi
	grep -E '^Done' "$scratch/$t.log" || true
done
echo "fuzz smoke: all targets ran ${secs}s without a crash"
