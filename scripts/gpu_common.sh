# Shared by scripts/gpu_check.sh and scripts/gpu_profile.sh (sourced, not run): the card's file-name slug
# and the cuDNN library folder of the GPU machine's Python environment.

# card_slug "<card name>": lower case, every run of other characters replaced by '-' ("unknown-gpu" if empty).
card_slug() {
  local s
  s="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')"
  printf '%s' "${s:-unknown-gpu}"
}

# use_cudnn_from_python: sets cudnn_lib to the folder holding cuDNN in the Python environment
# (nvidia/cudnn/lib; empty when there is none) and puts it first on LD_LIBRARY_PATH, so binaries that load
# cuDNN at run time find it.
use_cudnn_from_python() {
  cudnn_lib="$(python3 - <<'PY' 2>/dev/null
import glob, importlib.util, os, site, sys
dirs = []
try:
    spec = importlib.util.find_spec("nvidia.cudnn")
    if spec and spec.submodule_search_locations:
        dirs += [os.path.join(p, "lib") for p in spec.submodule_search_locations]
except Exception:
    pass
roots = list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()] + sys.path
for r in roots:
    dirs += glob.glob(os.path.join(r, "nvidia", "cudnn", "lib"))
for d in dirs:
    if os.path.isdir(d):
        print(os.path.realpath(d))
        break
PY
)"
  if [[ -n "$cudnn_lib" ]]; then
    export LD_LIBRARY_PATH="$cudnn_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
}
