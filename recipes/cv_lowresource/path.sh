# The environment of the recipe: metarecipe and its kernels importable, tools present. Sourced by run.sh.
# When something is missing it is installed (pip; apt-get as root) or the exact command is named.
export PYTHONUNBUFFERED=1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if ! python -c "import torch, metarecipe._C" 2>/dev/null; then
  if [ ! -f "$root/setup.py" ]; then
    echo "path.sh: metarecipe is not installed; install it with: pip install --no-build-isolation -e <metarecipe checkout>" >&2
    exit 1
  fi
  python -c "import torch" 2>/dev/null || pip install torch==2.13.0
  echo "path.sh: installing metarecipe with its kernels (pip install --no-build-isolation -e $root, about a minute)" >&2
  pip install --no-build-isolation -e "$root" >&2
fi

if [ -z "${cv_root:-}" ] && ! command -v espeak-ng >/dev/null; then
  packages="espeak-ng $(for l in ${source_langs:-} ${target_langs:-}; do
    case $l in pt) echo fortunes-br ;; de|es|it|pl|cs|ru|eo) echo "fortunes-$l" ;; esac; done | sort -u | tr '\n' ' ')"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >&2
  else
    echo "path.sh: the demo corpus needs: sudo apt-get update && sudo apt-get install -y $packages" >&2
    exit 1
  fi
fi
