# Sourced first in every call on a lent GPU machine of the paper campaign (docs/campaign.md, "How a
# session runs it"). Calls are short, each lays the checkout anew, and files under /tmp survive
# between calls while the machine stays warm, so what a call carries is copied there.
#
#   source scripts/device_env.sh        # the environment; this call's carried folders into $DEVICE_TMP
#   source scripts/device_env.sh join   # ... then join the archive's parts and check its SHA-256
#
# Carried folders (git-ignored, at the checkout's root; name them in the call's carry), by prefix:
#   .whs/  wheels the machine lacks (papermill, nni, submitit, xmltodict ...): installed once
#          into $DEVICE_TMP/site, which goes on PYTHONPATH
#   .pa*/  parts of cifar100-png.tar.xz (`split -b 36M cifar100-png.tar.xz c100.part.`), one or more
#          a folder, SHA256SUMS beside one of them (docs/datasets.md): into $DEVICE_TMP/c100
#   .cr*/  a carry that a session's calls returned (carry.json and its chunks): into
#          $DEVICE_TMP/carry/<folder name>, to give `campaign_session.sh start`; a carry too large
#          for one call travels as .crN, .crN+2, .crN+3 ... (one a call), all into carry/.crN
# Sets GREENLIB_DATASETS=$DEVICE_TMP/c100 and GREENLIB_DATA=$DEVICE_TMP/greenlib (the results store
# outside the checkout), MPLCONFIGDIR, and keeps NCCL off NVLink multicast (KINDS.md).
T=${DEVICE_TMP:-/tmp}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="$T/site${PYTHONPATH:+:$PYTHONPATH}" MPLCONFIGDIR="$T/mpl"
export GREENLIB_DATASETS="$T/c100" GREENLIB_DATA="$T/greenlib"
mkdir -p "$T/c100" "$T/greenlib/results" "$T/carry"
if [ -d .whs ] && [ ! -f "$T/site/.done" ]; then
  if pip install -q --no-index --no-deps --no-compile --target "$T/site" .whs/*.whl > "$T/pip.log" 2>&1; then
    touch "$T/site/.done"
  else
    echo "error: installing the wheels of .whs/ failed (last lines of $T/pip.log):"; tail -3 "$T/pip.log"
  fi
fi
for _d in .pa*/; do [ -d "$_d" ] && cp "$_d"* "$T/c100/" && echo "carried ${_d%/} -> $T/c100"; done
for _d in .cr*/; do
  [ -d "$_d" ] || continue
  _n=${_d%/}; _n=${_n%%+*}  # .cr6+2 joins .cr6
  mkdir -p "$T/carry/$_n" && cp "$_d"* "$T/carry/$_n/" && echo "carried ${_d%/} -> $T/carry/$_n"
done
unset _d _n

device_join() {  # the archive from its parts, checked against SHA256SUMS; the parts go once it checks
  local dir="$T/c100" archive=cifar100-png.tar.xz want got parts
  if [ ! -f "$dir/$archive" ]; then
    parts=$(cd "$dir" && ls c100.part.* 2>/dev/null | sort | tr '\n' ' ')
    [ -n "$parts" ] || { echo "error: no parts c100.part.* in $dir: carry the .pa* folders first"; return 3; }
    [ -f "$dir/SHA256SUMS" ] || { echo "error: no SHA256SUMS in $dir: carry it beside a part"; return 3; }
    want=$(awk -v f="$archive" '$2 == f {print $1}' "$dir/SHA256SUMS")
    (cd "$dir" && cat $parts > "$archive.partial")
    got=$(sha256sum "$dir/$archive.partial" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
      rm -f "$dir/$archive.partial"
      echo "error: $archive joined from parts $parts fails its SHA-256 (a part missing, or from another split?)"
      return 3
    fi
    mv "$dir/$archive.partial" "$dir/$archive" && (cd "$dir" && rm -f $parts)
  fi
  echo "$archive: OK ($dir)"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=index,name,driver_version,power.limit --format=csv,noheader | tee "${OUT:-$T}/gpus.txt"
  fi
}

if [ "${1:-}" = join ]; then device_join; fi
