# Shell helpers shared by recipes: logging, stages, done-markers, parallel jobs. Source it.

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [$(basename "$0")] $*" >&2; }

# stage N NAME: true when stage N lies in [stage, stop_stage]; logs its start and remembers it for stage_end
stage() {
  if [ "$1" -lt "$stage" ] || [ "$1" -gt "$stop_stage" ]; then return 1; fi
  _stage_number=$1; _stage_name=$2; _stage_start=$(date +%s)
  log "stage $1 ($2): start"
}

stage_end() {
  log "stage $_stage_number ($_stage_name): done in $(( $(date +%s) - _stage_start )) s"
}

# is_done DIR SIGNATURE: DIR/.done holds SIGNATURE (what made the work: its command) and --force is off
is_done() {
  [ "${force:-false}" = false ] && [ -f "$1/.done" ] && [ "$(cat "$1/.done")" = "$2" ]
}

# mark_done DIR SIGNATURE: written last, atomically (temp file, rename)
mark_done() {
  mkdir -p "$1"
  printf '%s\n' "$2" > "$1/.done.tmp.$$" && mv -f "$1/.done.tmp.$$" "$1/.done"
}

# once DIR LOG CMD...: runs CMD (output to LOG) unless DIR/.done holds this very command; marks it done after
once() {
  local dir=$1 logfile=$2
  shift 2
  local signature="$*"
  if is_done "$dir" "$signature"; then return 0; fi
  mkdir -p "$(dirname "$logfile")"
  log "running: $* (log: $logfile)"
  echo "# $(date '+%Y-%m-%d %H:%M:%S') $*" > "$logfile"
  if "$@" >> "$logfile" 2>&1; then
    mark_done "$dir" "$signature"
  else
    log "FAILED (exit $?): $*; see $logfile"
    return 1
  fi
}

# set_aside DIR: --force's way to redo a unit of work: DIR, if any, becomes DIR.prev (replacing an earlier one)
set_aside() {
  [ -e "$1" ] || return 0
  rm -rf "$1.prev"
  mv "$1" "$1.prev"
  log "moved $1 aside to $1.prev (--force)"
}

# Parallel jobs: `spawn CMD...` starts CMD in the background, at most $nj at once; `wait_all` waits for every
# job and returns 1 if any failed (each failure is logged by `once`; the others run on). Needs bash 5.1.
_jobs_failed=0
_reap_one() {  # waits for one job; false when none is left
  local pid=
  wait -n -p pid
  local rc=$?
  [ -n "${pid:-}" ] || return 1
  [ "$rc" -eq 0 ] || _jobs_failed=$((_jobs_failed + 1))
}

spawn() {
  while [ "$(jobs -rp | wc -l)" -ge "${nj:-1}" ]; do _reap_one; done
  "$@" &
}

wait_all() {
  while _reap_one; do :; done
  local failed=$_jobs_failed
  _jobs_failed=0
  [ "$failed" -eq 0 ] || { log "$failed job(s) failed"; return 1; }
}
