# Kaldi-style option parsing for recipes; source it after declaring the options (do not execute it).
#
# The calling script declares its options between two marker lines, one per line, as
#     # begin options
#     stage=0            # first stage to run
#     source_langs="de es"  # languages meta-trained on
#     # end options
# Then `. utils/parse_options.sh` reads that block from the script itself and consumes the leading options of
# "$@": `--foo-bar VALUE` or `--foo-bar=VALUE` sets foo_bar. A default that is an integer admits integers only,
# a decimal number numbers only, true/false booleans only (a boolean given last, or before another option,
# alone means true). `--config FILE` reads `--foo-bar=VALUE` lines (# comments) from FILE before the command
# line is applied, so the command line wins; the file is parsed, never executed. `--mini` is short for
# `--config conf/mini.conf` where the script has that preset beside it (and no option of its own named mini).
# Unknown options and values of the wrong type are errors; `--help` lists every option with its default and
# description. Arguments after the options stay in "$@".

_po_script=${BASH_SOURCE[1]:-$0}
# a script that cd's to its own directory first (run.sh does) was named relative to the caller's directory
[ -r "$_po_script" ] || _po_script=./${_po_script##*/}
[ -r "$_po_script" ] || { echo "parse_options.sh: cannot read the options of $_po_script" >&2; exit 1; }
_po_names=()
declare -A _po_default _po_help

while IFS= read -r _po_line; do
  if [[ $_po_line =~ ^([a-z][a-z0-9_]*)=(\"[^\"]*\"|[^[:space:]]*)[[:space:]]*(#[[:space:]]*(.*))?$ ]]; then
    _po_name=${BASH_REMATCH[1]}
    _po_value=${BASH_REMATCH[2]}
    _po_value=${_po_value#\"}
    _po_names+=("$_po_name")
    _po_default[$_po_name]=${_po_value%\"}
    _po_help[$_po_name]=${BASH_REMATCH[4]}
  fi
done < <(sed -n '/^# begin options/,/^# end options/p' "$_po_script")

_po_type() {  # int | float | bool | string, from an option's default
  case ${_po_default[$1]} in
    true|false) echo bool ;;
    *) if [[ ${_po_default[$1]} =~ ^-?[0-9]+$ ]]; then echo int
       elif [[ ${_po_default[$1]} =~ ^-?[0-9]*\.[0-9]+$ ]]; then echo float
       else echo string; fi ;;
  esac
}

_po_usage() {
  echo "usage: $(basename "$_po_script") [options]${usage_args:+ $usage_args}"
  [ -n "${help_message:-}" ] && echo "$help_message"
  echo "options:"
  for _po_name in "${_po_names[@]}"; do
    printf "  --%-24s %-7s (default: '%s') %s\n" "${_po_name//_/-}" "$(_po_type "$_po_name")" \
      "${_po_default[$_po_name]}" "${_po_help[$_po_name]}"
  done
  echo "  --config FILE          read --option=value lines from FILE first (the command line wins)"
  [ -z "$_po_mini" ] || echo "  --mini                 short for --config $_po_mini"
}

_po_set() {  # _po_set SOURCE OPTION VALUE: type-checked assignment, without eval
  local name=${2//-/_} type
  if [ -z "${_po_default[$name]+set}" ]; then
    echo "$(basename "$_po_script"): unknown option --$2 ($1); see --help" >&2
    exit 1
  fi
  type=$(_po_type "$name")
  case $type in
    int) [[ $3 =~ ^-?[0-9]+$ ]] || { echo "$(basename "$_po_script"): --$2 takes an integer, got '$3' ($1)" >&2; exit 1; } ;;
    float) [[ $3 =~ ^-?([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] ||
      { echo "$(basename "$_po_script"): --$2 takes a number, got '$3' ($1)" >&2; exit 1; } ;;
    bool) [[ $3 == true || $3 == false ]] ||
      { echo "$(basename "$_po_script"): --$2 takes true or false, got '$3' ($1)" >&2; exit 1; } ;;
  esac
  printf -v "$name" '%s' "$3"
}

_po_mini=$(dirname "$_po_script")/conf/mini.conf
[ -f "$_po_mini" ] && [ -z "${_po_default[mini]+set}" ] || _po_mini=""
_po_args=()
for _po_arg in "$@"; do
  if [ "$_po_arg" = --mini ] && [ -n "$_po_mini" ]; then _po_args+=(--config "$_po_mini"); else _po_args+=("$_po_arg"); fi
done
set -- "${_po_args[@]+"${_po_args[@]}"}"

for ((_po_i = 0; _po_i < ${#_po_args[@]}; _po_i++)); do  # --help and --config first
  case ${_po_args[_po_i]} in
    --help|-h) _po_usage; exit 0 ;;
    --config|--config=*)
      if [[ ${_po_args[_po_i]} == --config=* ]]; then _po_file=${_po_args[_po_i]#--config=}
      else _po_file=${_po_args[_po_i + 1]:-}; fi
      if [ ! -f "$_po_file" ]; then
        echo "$(basename "$_po_script"): --config: no such file '$_po_file'" >&2
        exit 1
      fi
      _po_lineno=0
      while IFS= read -r _po_line || [ -n "$_po_line" ]; do
        _po_lineno=$((_po_lineno + 1))
        _po_line=${_po_line%%#*}
        _po_line=$(echo "$_po_line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
        [ -z "$_po_line" ] && continue
        if [[ ! $_po_line =~ ^--([a-z][a-z0-9-]*)=(.*)$ ]]; then
          echo "$(basename "$_po_script"): $_po_file:$_po_lineno: expected --option=value, got '$_po_line'" >&2
          exit 1
        fi
        _po_value=${BASH_REMATCH[2]}
        _po_value=${_po_value#\"}
        _po_set "$_po_file:$_po_lineno" "${BASH_REMATCH[1]}" "${_po_value%\"}"
      done < "$_po_file" ;;
  esac
done

while [ $# -gt 0 ]; do
  case $1 in
    --config=*) shift ;;
    --config) shift 2 ;;
    --*=*) _po_opt=${1%%=*}; _po_set "command line" "${_po_opt#--}" "${1#*=}"; shift ;;
    --*)
      _po_opt=${1#--}
      if [ "$(_po_type "${_po_opt//-/_}" 2>/dev/null)" = bool ] && [[ $# -eq 1 || $2 == --* ]]; then
        _po_set "command line" "$_po_opt" true; shift
      elif [ $# -lt 2 ]; then
        _po_set "command line" "$_po_opt" ""  # unknown option error, or a missing value below
        echo "$(basename "$_po_script"): --$_po_opt needs a value" >&2; exit 1
      else
        _po_set "command line" "$_po_opt" "$2"; shift 2
      fi ;;
    *) break ;;
  esac
done
unset _po_arg _po_args _po_mini _po_i _po_file _po_line _po_lineno _po_value _po_opt _po_name
