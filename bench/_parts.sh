# Sourced by the GPU scripts: `part NAME COMMAND...` runs one part of a benchmark script so that a
# failing part prints its error and the script goes on; `parts_summary` ends the script with one
# line naming the parts that failed and exits 1 if any did.
failed_parts=()
part() {
  local name=$1; shift
  echo "== $name"
  if "$@"; then
    return 0
  else
    local status=$?
    echo "== $name FAILED (exit status $status); going on with the next part"
    failed_parts+=("$name")
  fi
}
parts_summary() {
  if [ ${#failed_parts[@]} -eq 0 ]; then
    echo "== every part ran"
  else
    echo "== ${#failed_parts[@]} part(s) failed: ${failed_parts[*]}"
    return 1
  fi
}
