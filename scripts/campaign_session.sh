#!/usr/bin/env bash
# One working session of the paper campaign on a lent GPU machine whose calls are short and whose
# files under /tmp survive between calls (docs/campaign.md, "How a session runs it").
#
#   bash scripts/campaign_session.sh start GRID.json [CARRIED_DIR]   # seed, restore, start the grid detached
#   bash scripts/campaign_session.sh collect [WAIT_S] [WEIGHTS_GLOB]  # wait, then results (+ carry) under $OUT
#
# start: copies this checkout to $WORK/repo (the next call lays the checkout anew), seeds the store
#   $GREENLIB_DATA/results/paper from the committed data/results/paper once, restores what a previous
#   session carried (greenlib.scaleout.carry: checkpoints of cut-off runs, teachers' weights) and starts
#   the dataset decode and the grid with setsid, so that they outlive the call.
# collect: waits up to WAIT_S seconds (default 540) or until the grid ends, then writes under $OUT the
#   results that landed (paper.tar.gz: no *.pt/*.ckpt), the grid's log and report, and, when the grid
#   is still running or WEIGHTS_GLOB is given, carry/ (the chunks to carry into the next session).
set -u
: "${GREENLIB_DATA:?set GREENLIB_DATA (the store root on the machine, outside the checkout)}"
: "${OUT:?set OUT (the folder that comes back)}"
WORK=${WORK:-/tmp/campaign}
STORE=$GREENLIB_DATA/results/paper
mkdir -p "$WORK" "$STORE"

case "${1:-}" in
start)
  grid=${2:?give the grid file}
  [ -f "$grid" ] || { echo "error: grid file '$grid' not found"; exit 2; }
  rm -rf "$WORK/repo" && mkdir -p "$WORK/repo"
  tar cf - --exclude='./.[!.]*' . | (cd "$WORK/repo" && tar xf -)  # not the carried dot-folders (archive parts, wheels)
  if [ ! -f "$GREENLIB_DATA/.seeded" ]; then
    cp -r data/results/paper/. "$STORE/" 2>/dev/null
    touch "$GREENLIB_DATA/.seeded"
  fi
  if [ -n "${3:-}" ]; then
    python3 -m greenlib.scaleout.carry unpack "$3" "$STORE" || exit 3
  fi
  cd "$WORK/repo" || exit 1
  setsid nohup bash -c "python3 -c 'from greenlib.data import load_dataset; print(load_dataset(\"cifar100\").description)'
    echo \"decoded \$(date +%T)\"
    python3 -m greenlib.scaleout.grid --profile paper --grid '$grid' --executor local --gpus all --log-dir '$WORK/gridlog'
    echo \"grid rc=\$? \$(date +%T)\"; echo \"all done \$(date +%T)\"" > "$WORK/grid.log" 2>&1 < /dev/null &
  sleep "${WAIT:-45}"; grep -av "it/s\|s/it" "$WORK/grid.log" | tail -25
  ;;
collect)
  wait_s=${2:-540}; weights=${3:-}; t=0
  while [ "$t" -lt "$wait_s" ] && ! grep -q "all done" "$WORK/grid.log" 2>/dev/null; do sleep 10; t=$((t + 10)); done
  date +%T
  grep -a "^start \|\] done\|failed\|blocked\|skipped\|cached\|grid rc\|rror" "$WORK/grid.log" | tail -30
  (cd "$GREENLIB_DATA/results" && find paper -type f -newer "$GREENLIB_DATA/.seeded" ! -name '*.pt' ! -name '*.ckpt') > "$WORK/new.txt"
  echo "$(wc -l < "$WORK/new.txt") new result files"
  tar czf "$OUT/paper.tar.gz" -C "$GREENLIB_DATA/results" -T "$WORK/new.txt"
  cp "$WORK/grid.log" "$OUT/"; [ -d "$WORK/gridlog" ] && tar czf "$OUT/gridlog.tar.gz" -C "$WORK" gridlog
  if ! grep -q "all done" "$WORK/grid.log" || [ -n "$weights" ]; then
    # what one call brings back is at most 64 MiB: the results' tar and the log take a few
    python3 -m greenlib.scaleout.carry pack "$STORE" "$OUT/carry" --max-mib "${CARRY_MAX_MIB:-56}" ${weights:+--weights "$weights"}
  fi
  ls -la "$OUT"
  ;;
*)
  echo "usage: $0 start GRID.json [CARRIED_DIR] | collect [WAIT_S] [WEIGHTS_GLOB]"; exit 2 ;;
esac
