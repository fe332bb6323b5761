#!/usr/bin/env bash
# One working session of the paper campaign on a lent GPU machine whose calls are short and whose
# files under /tmp survive between calls (docs/campaign.md, "How a session runs it").
#
#   bash scripts/campaign_session.sh start GRID.json[@GPUS] [GRID.json@GPUS ...] [CARRIED_DIR ...]
#   bash scripts/campaign_session.sh collect [WAIT_S] [WEIGHTS_GLOB]   # wait, then the results under $OUT
#   FINAL=1 bash scripts/campaign_session.sh collect [WAIT_S] [WEIGHTS_GLOB]   # ... stop, pack the carry
#   bash scripts/campaign_session.sh more                              # the carry's next chunks under $OUT
#
# start: copies this checkout to $WORK/repo (the next call lays the checkout anew), seeds the store
#   $GREENLIB_DATA/results/paper from the committed data/results/paper once (it refuses to start
#   with no complete run there, unless NEW_STORE=1: the grids would run done runs again), restores what a previous
#   session carried (greenlib.scaleout.carry: checkpoints of cut-off runs, teachers' weights; folder
#   arguments, unpacked in the order given, so the newest state of a run goes last) and starts the
#   dataset decode, then every grid on its GPUs (@0,1,2; default all; one
#   grid per set of GPUs, so that a long run such as a NAS search is not queued behind shared runs),
#   with setsid, so that they outlive the call.
# collect: waits up to WAIT_S seconds (default 540) or until every grid has ended, prints each
#   running job's last progress bar (epochs done, time gone<time left: what the last call's WAIT_S
#   is chosen from), then writes under $OUT the results that landed (paper.tar.gz: no
#   *.pt/*.ckpt/*.tmp) and the grids' logs; while a grid runs, also the next chunks (at most
#   CARRY_MAX_MIB, 56, MiB, and what the results and logs leave of the OUT_MAX_MIB, 63, MiB
#   that one call returns) of a rolling carry, in case the
#   machine goes back before the last call (it does 30 s after a call): what changed since start
#   (checkpoints of cut-off runs, new weights matching WEIGHTS_GLOB, the results of runs that ended),
#   packed anew once every chunk of the previous pack went; a pack larger than one call (a CRD
#   memory bank, a NAS supernet) comes over several calls, each call saying which pack and chunks
#   it returns. With FINAL=1
#   (the session's last call) it stops the grids still running (TERM; KILL 5 s later, or once a
#   checkpoint being written has landed, at most SAVE_WAIT_S, 30, s more), packs the carry (every cut-off run
#   holding a checkpoint, and the weights of the complete runs matching WEIGHTS_GLOB) into
#   $WORK/carry (chunks of CARRY_CHUNK_MIB, 15) and writes its first chunks, at most CARRY_MAX_MIB
#   (56) MiB, under $OUT/carry;
#   `more` (the next calls, each within 30 s) writes the next ones until none is left.
set -u
: "${GREENLIB_DATA:?set GREENLIB_DATA (the store root on the machine, outside the checkout)}"
: "${OUT:?set OUT (the folder that comes back)}"
WORK=${WORK:-/tmp/campaign}
OUT_MAX_MIB=${OUT_MAX_MIB:-63}  # what one call returns in all (64 MiB), the results and logs included
STORE=$GREENLIB_DATA/results/paper
mkdir -p "$WORK" "$STORE"

send_chunks() {  # DIR's unsent chunks (manifest first), at most CARRY_MAX_MIB MiB a call; sets $left
  local dir=${1:-$WORK/carry} budget=$(( ${CARRY_MAX_MIB:-56} * 1048576 )) used=0 f size sent="" others
  others=$(find "$OUT" -maxdepth 1 -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  [ $((OUT_MAX_MIB * 1048576 - others)) -lt "$budget" ] && budget=$((OUT_MAX_MIB * 1048576 - others))  # results first
  left=0
  mkdir -p "$OUT/carry" && touch "$dir.sent"
  for f in "$dir"/carry.json "$dir"/carry.tar.*; do
    [ -f "$f" ] || continue
    grep -qxF "$f" "$dir.sent" && continue
    size=$(stat -c %s "$f")
    if [ $((used + size)) -gt "$budget" ]; then left=$((left + 1)); continue; fi
    cp "$f" "$OUT/carry/" && echo "$f" >> "$dir.sent" && used=$((used + size)) && sent+=" ${f##*/}"
  done
  echo "carry: sent $((used / 1048576)) MiB this call (${sent# }); $left chunk(s) left"
}

case "${1:-}" in
start)
  shift; carried=(); grids=()
  for a in "$@"; do
    if [ -d "$a" ]; then carried+=("$a")
    else
      [ -f "${a%@*}" ] || { echo "error: grid file '${a%@*}' not found"; exit 2; }
      grids+=("$a")
    fi
  done
  [ ${#grids[@]} -gt 0 ] || { echo "error: give at least one grid file"; exit 2; }
  if [ ! -f "$GREENLIB_DATA/.seeded" ] && [ -z "${NEW_STORE:-}" ] && ! compgen -G "data/results/paper/*/result.json" > /dev/null; then
    # session 14: the store was moved out of the checkout to make room, and the grids ran done runs again
    echo "error: data/results/paper in this checkout holds no complete run, so the grids would run again what is done; carry the committed store with this call (NEW_STORE=1 starts an empty one)"; exit 2
  fi
  rm -rf "$WORK/repo" "$WORK"/grid-*.log "$WORK/carry" "$WORK/carry.sent" "$WORK/icarry" "$WORK/icarry.sent" \
    "$WORK/icarry.n" && mkdir -p "$WORK/repo"
  skip=(); for d in .[!.]*; do [ "$d" = .git ] || skip+=(--exclude="./$d"); done  # the carried dot-folders stay
  tar cf - "${skip[@]}" . | (cd "$WORK/repo" && tar xf -)  # (archive parts, wheels); .git goes: records name the commit
  if [ ! -f "$GREENLIB_DATA/.seeded" ]; then
    cp -r data/results/paper/. "$STORE/" 2>/dev/null
    touch "$GREENLIB_DATA/.seeded"
  fi
  for c in ${carried[@]+"${carried[@]}"}; do
    python3 -m greenlib.scaleout.carry unpack "$c" "$STORE" || exit 3
  done
  touch "$WORK/unpacked"  # the rolling carry of `collect` takes what changed after this
  cd "$WORK/repo" || exit 1
  runs=""; i=0
  for g in "${grids[@]}"; do
    i=$((i + 1)); file=${g%@*}; gpus=all; [ "$g" != "$file" ] && gpus=${g#*@}
    [ "$gpus" != all ] && [ "${gpus#*,}" = "$gpus" ] && gpus="$gpus,"  # @3 is GPU 3 (the grid reads "3" as a count)
    runs+="{ python3 -m greenlib.scaleout.grid --profile paper --grid '$file' --executor local --gpus '$gpus' --log-dir '$WORK/gridlog-$i' > '$WORK/grid-$i.log' 2>&1; echo \"grid $i ($file on GPUs $gpus) rc=\$? \$(date +%T)\"; } &
"
  done
  setsid nohup bash -c "python3 -c 'from greenlib.data import load_dataset; print(load_dataset(\"cifar100\").description)'
    echo \"decoded \$(date +%T)\"
    $runs wait; echo \"all done \$(date +%T)\"" > "$WORK/grid.log" 2>&1 < /dev/null &
  echo $! > "$WORK/grid.pid"
  sleep "${WAIT:-45}"; cat "$WORK/grid.log"; for f in "$WORK"/grid-*.log; do [ -f "$f" ] && grep -av "it/s\|s/it" "$f" | tail -8; done
  if grep -q "all done" "$WORK/grid.log"; then :
  elif kill -0 "$(cat "$WORK/grid.pid")" 2>/dev/null; then
    ls "$WORK"/grid-*.log > /dev/null 2>&1 || echo "decoding the dataset; the grids start after it"
  else echo "error: the grids' process ended without 'all done' (see $WORK/grid.log above)"; exit 1
  fi
  ;;
collect)
  wait_s=${2:-540}; weights=${3:-}; t=0
  [ -f "$WORK/grid.log" ] || { echo "error: no grid was started on this machine ($WORK/grid.log is missing): the machine was replaced; carry the dataset and start again"; exit 3; }
  while [ "$t" -lt "$wait_s" ] && ! grep -q "all done" "$WORK/grid.log" 2>/dev/null; do sleep 10; t=$((t + 10)); done
  date +%T
  cat "$WORK/grid.log"
  for f in "$WORK"/grid-*.log; do echo "== $f"; grep -a "^start \|\] done\|failed\|blocked\|skipped\|cached\|rror" "$f" | tail -20; done
  # each running job's progress bar, for the WAIT_S of the last call (a run's own checkpoint, or none)
  find "$WORK" -path "$WORK/gridlog-*" -name '*_log.err' -mmin -2 2>/dev/null | sort | while read -r f; do
    line=$(tail -c 4000 "$f" | tr '\r' '\n' | grep -a '%|' | tail -1)
    [ -n "$line" ] && echo "progress (${f#"$WORK"/}): $line"
  done
  if [ -n "${FINAL:-}" ] && ! grep -q "all done" "$WORK/grid.log"; then
    kill -TERM -- "-$(cat "$WORK/grid.pid")" 2>/dev/null; sleep 5
    for _ in $(seq "${SAVE_WAIT_S:-30}"); do  # a checkpoint being written (submitit's jobs outlive TERM) lands first
      [ -n "$(find "$STORE" -name '*.tmp' -newermt '-60 seconds' 2>/dev/null | head -1)" ] || break; sleep 1
    done
    kill -KILL -- "-$(cat "$WORK/grid.pid")" 2>/dev/null
    echo "stopped the grids $(date +%T)"
  fi
  (cd "$GREENLIB_DATA/results" && find paper -type f -newer "$GREENLIB_DATA/.seeded" ! -name '*.pt' ! -name '*.ckpt' \
    ! -name '*.tmp') > "$WORK/new.txt"
  echo "$(wc -l < "$WORK/new.txt") new result files"
  tar czf "$OUT/paper.tar.gz" -C "$GREENLIB_DATA/results" -T "$WORK/new.txt"
  tar czf "$OUT/gridlogs.tar.gz" -C "$WORK" --exclude=repo --exclude=carry --exclude=icarry --exclude=new.txt .
  rm -rf "$WORK/carry" "$WORK/carry.sent"
  if [ -n "${FINAL:-}" ]; then  # everything, over this call and the next ('more')
    python3 -m greenlib.scaleout.carry pack "$STORE" "$WORK/carry" --chunk-mib "${CARRY_CHUNK_MIB:-15}" \
      ${weights:+--weights "$weights"} && send_chunks && [ "$left" -gt 0 ] && echo "call more"
  elif ! grep -q "all done" "$WORK/grid.log"; then  # in case the machine goes back before the last call
    pending=0
    [ -f "$WORK/icarry/carry.json" ] && pending=$(ls "$WORK"/icarry/carry.* | grep -cvxFf "$WORK/icarry.sent")
    if [ "$pending" -eq 0 ]; then  # every chunk of the last pack went: a new pack of what changed since start
      rm -rf "$WORK/icarry" "$WORK/icarry.sent"
      n=$(( $(cat "$WORK/icarry.n" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$WORK/icarry.n"
      python3 -m greenlib.scaleout.carry pack "$STORE" "$WORK/icarry" --chunk-mib "${CARRY_CHUNK_MIB:-15}" \
        --changed-since "$WORK/unpacked" ${weights:+--weights "$weights"}
    fi
    if [ ! -f "$WORK/icarry/carry.json" ]; then
      echo "error: the rolling carry was not packed (see above)"
    elif grep -q '"files": \[\]' "$WORK/icarry/carry.json"; then
      echo "rolling carry: nothing changed since start"; rm -rf "$WORK/icarry" "$WORK/icarry.sent"
    else
      send_chunks "$WORK/icarry"
      echo "rolling carry: pack $(cat "$WORK/icarry.n"), $([ "$left" -gt 0 ] && echo "$left chunk(s) come with the next collect" || echo complete)"
    fi
  fi
  ls -la "$OUT"; [ -d "$OUT/carry" ] && ls -la "$OUT/carry"
  exit 0
  ;;
more)
  [ -f "$WORK/carry/carry.json" ] || { echo "error: no carry packed in $WORK/carry (run FINAL=1 collect first)"; exit 2; }
  send_chunks && [ "$left" -gt 0 ] && echo "call more"; ls -la "$OUT/carry"
  ;;
*)
  echo "usage: $0 start GRID.json[@GPUS] ... [CARRIED_DIR ...] | collect [WAIT_S] [WEIGHTS_GLOB] | more"; exit 2 ;;
esac
