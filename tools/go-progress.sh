# shellcheck shell=bash
# Sourced by the tool build scripts. A cold build of the control plane compiles thousands of
# packages for ten minutes; without this, a new user saw nothing between "building" and "built".
# go_build runs `go build -v` (which names each package as it compiles it) against the package
# count that `go list -deps` gives beforehand, and prints a progress line at every tenth of the way
# and at least once a minute (linking prints nothing else), so a log in CI shows that it moves.
#
# Usage: go_build <label> <go build flags...> -- <packages...>   (run in the wrapper module's dir)

go_build() {
  local label=$1
  shift
  local -a flags=() packages=() list_flags=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    flags+=("$1")
    shift
  done
  shift
  packages=("$@")
  local i
  for ((i = 0; i < ${#flags[@]}; i++)); do
    if [ "${flags[$i]}" = "-tags" ]; then list_flags=(-tags "${flags[$((i + 1))]}"); fi
  done

  local start total
  start=$(date +%s)
  echo "$label: resolving packages (downloads the Go modules on a cold cache)" >&2
  total=$(go list -deps "${list_flags[@]}" "${packages[@]}" | wc -l)
  echo "$label: compiling up to $total packages ($(( $(date +%s) - start ))s so far)" >&2

  # go build -v writes package names and errors to stderr; package names are single words, and
  # anything else (compiler errors, "# pkg" headers) is passed through untouched.
  local status=0
  go build -v "${flags[@]}" "${packages[@]}" 2>&1 >/dev/null | {
    local compiled=0 shown_tenth=0 last_shown line tenth now waited
    last_shown=$(date +%s)
    while true; do
      waited=0
      IFS= read -r -t 60 line || waited=$?
      if [ "$waited" -gt 128 ]; then
        # No package finished for a minute (a large package, or the link): say it still works.
        echo "$label: $compiled/$total packages compiled, still working, $(( $(date +%s) - start ))s" >&2
        last_shown=$(date +%s)
        continue
      fi
      [ "$waited" -eq 0 ] || break  # the end of go build's output
      case $line in
        *" "* | "#"* | "") echo "$line" >&2; continue ;;
      esac
      compiled=$((compiled + 1))
      tenth=$((compiled * 10 / (total > 0 ? total : 1)))
      now=$(date +%s)
      if [ "$tenth" -gt "$shown_tenth" ] || [ $((now - last_shown)) -ge 60 ]; then
        shown_tenth=$tenth
        last_shown=$now
        echo "$label: $compiled/$total packages compiled, $(( now - start ))s" >&2
      fi
    done
  } || status=$?
  [ "$status" -eq 0 ] || { echo "$label: go build failed (exit $status)" >&2; return "$status"; }
  echo "$label: done in $(( $(date +%s) - start ))s" >&2
}
