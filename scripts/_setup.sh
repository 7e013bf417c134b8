# Shared set-up for scripts/test, scripts/demo and scripts/bench (sourced, not run).
# Creates/updates .venv and, when run as root, installs the Debian packages the GUI tests
# need.  Idempotent: a second run with an unchanged pyproject.toml installs nothing.

HU_ROI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$HU_ROI_ROOT/.venv"
PY="$VENV/bin/python"

# Debian 12 packages napari/Qt need to render under Xvfb (found on a bare Debian 12).
GUI_DEBS=(xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon0
  libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0
  libxcb-render0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0)

log() { printf '[setup] %s\n' "$*" >&2; }

find_python() {
  local c
  for c in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  log "Python >= 3.11 is required (set PYTHON=/path/to/python3.11)."
  return 1
}

ensure_debs() {
  # ensure_debs PKG... : install missing Debian packages (root), or say what to run.
  local missing=() p
  command -v dpkg-query >/dev/null 2>&1 || return 0
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || apt-get update
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || apt-get install -y --no-install-recommends "${missing[@]}"
  else
    log "missing system packages: ${missing[*]}"
    log "run: sudo apt-get install -y ${missing[*]}"
    return 1
  fi
}

ensure_venv() {
  # ensure_venv EXTRAS : create .venv and install the project with these extras (e.g. "napari,dev").
  local extras="$1" py stamp hash
  if [ ! -x "$PY" ]; then
    py="$(find_python)" || return 1
    log "creating $VENV with $py"
    "$py" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
  fi
  stamp="$VENV/.hu-roi-installed"
  # The stamp covers the pinned versions too: a changed constraints.txt reinstalls.
  hash="$(cat "$HU_ROI_ROOT/pyproject.toml" "$HU_ROI_ROOT/constraints.txt" | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ]; then
    # Installed for this pyproject.toml with these extras (or, for the core, with any).
    grep -qx -- "$hash-$extras" "$stamp" && return 0
    [ -z "$extras" ] && grep -q -- "^$hash-" "$stamp" && return 0
  fi
  log "installing hu-roi[${extras}] into .venv (first time takes a few minutes)"
  # -c: the versions pinned in constraints.txt (reproducible installs; README explains
  # how to update them).
  if [ -n "$extras" ]; then
    "$PY" -m pip install -q -c "$HU_ROI_ROOT/constraints.txt" -e "$HU_ROI_ROOT[$extras]"
  else
    "$PY" -m pip install -q -c "$HU_ROI_ROOT/constraints.txt" -e "$HU_ROI_ROOT"
  fi
  echo "$hash-$extras" >>"$stamp"
}
