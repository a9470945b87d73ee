#!/bin/sh
# run_all.sh [SECONDS] - fuzz every target for SECONDS (default 600), one
# after another, at the lowest CPU priority. New inputs go to work/<target>
# (ignored by git), the committed seeds in corpus/<target> are read only;
# each run's log is work/<target>.log, crashes land in artifacts/<target>/.
set -u
cd "$(dirname "$0")"
SECS=${1:-600}
TARGETS=${TARGETS:-"block_requestq mmio_transport rng_requestq snapshot_state http_request api_route config_file"}
for t in $TARGETS; do
    mkdir -p "work/$t"
    RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        > "work/$t.log" 2>&1
    echo "$t: exit $?" >> work/summary.txt
done
