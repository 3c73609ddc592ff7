# cached_build NAME OUT WANT BUILD FILE...: the stamp-and-lock pattern of
# the build scripts that fill ${TWILL_CACHE}. OUT is the cache directory,
# WANT the stamp's content (what the build is made from), BUILD a command
# run as `BUILD TMP` that leaves the FILEs (names relative to OUT) in the
# temporary directory TMP. When OUT's stamp says WANT and every FILE is
# there, nothing is built; otherwise one caller at a time builds, moves
# the files into OUT and writes the stamp last, so an interrupted build is
# redone. Prints OUT's first FILE.
cached_build() {
  local name=$1 out=$2 want=$3 build=$4
  shift 4
  local files=("$@")
  _cached_complete() {
    local f
    [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ] || return 1
    for f in "${files[@]}"; do [ -x "$out/$f" ] || return 1; done
  }
  if _cached_complete; then
    echo "$out/${files[0]}"
    return 0
  fi
  mkdir -p "$out"
  # One build at a time: a second caller waits, then finds the stamp.
  exec 9>"$out/.lock"
  flock 9
  if ! _cached_complete; then
    local start=$SECONDS tmp f
    tmp=$(mktemp -d "$out/build.XXXXXX")
    # shellcheck disable=SC2064 # tmp is fixed now
    trap "rm -rf '$tmp'" EXIT
    "$build" "$tmp"
    for f in "${files[@]}"; do mv -f "$tmp/$f" "$out/$f"; done
    echo "$want" > "$out/.stamp"
    echo "$name: done in $((SECONDS - start))s" >&2
  fi
  exec 9>&-
  echo "$out/${files[0]}"
}
