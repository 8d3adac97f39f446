# The environment of the recipe: metarecipe and its kernels importable, tools present. Sourced by run.sh.
# When something is missing it is installed (pip; apt-get as root) or the exact command is named.
export PYTHONUNBUFFERED=1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if ! python -c "import torch, metarecipe._C" 2>/dev/null; then
  if [ ! -f "$root/setup.py" ]; then
    echo "path.sh: metarecipe is not installed; install it with: pip install --no-build-isolation -e <metarecipe checkout>" >&2
    exit 1
  fi
  python -c "import torch" 2>/dev/null || pip install -c "$root/constraints.txt" torch==2.13.0 setuptools
  echo "path.sh: installing metarecipe with its kernels (pip install --no-build-isolation -e $root, about a minute)" >&2
  pip install -c "$root/constraints.txt" --no-build-isolation -e "$root" >&2
fi

# apt_install PURPOSE PACKAGE...: installs the Debian packages (as root), or names the exact command and stops
apt_install() {
  local purpose=$1
  shift
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "path.sh: installing $* for $purpose" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    echo "path.sh: $purpose needs Debian packages; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y $*" >&2
    exit 1
  fi
}

install_demo_tools() {  # install_demo_tools LANG...: espeak-ng and the fortunes the demo corpus speaks
  local packages=() lang
  command -v espeak-ng >/dev/null || packages+=(espeak-ng)
  for lang in "$@"; do
    local name=$lang
    [ "$lang" = pt ] && name=brasil
    [ -e "/usr/share/games/fortunes/$name" ] || packages+=("fortunes-$([ "$lang" = pt ] && echo br || echo "$lang")")
  done
  apt_install "the demo corpus" "${packages[@]+"${packages[@]}"}"
}

# install_asterisk_sounds LANG...: the real recordings of the asterisk corpus (one speaker per language, 8 kHz,
# with the text of every prompt)
install_asterisk_sounds() {
  local packages=() lang
  for lang in "$@"; do
    compgen -G "/usr/share/asterisk/sounds/$lang/*.wav" > /dev/null && [ -e "/usr/share/doc/asterisk-core-sounds-$lang" ] ||
      packages+=("asterisk-core-sounds-$lang" "asterisk-core-sounds-$lang-wav")
  done
  apt_install "the asterisk corpus" "${packages[@]+"${packages[@]}"}"
}

# install_noise_recordings: the music-on-hold recordings that augmentation mixes in as noise (conf/*.yaml)
install_noise_recordings() {
  [ -d /usr/share/asterisk/moh ] || apt_install "augmentation noise" asterisk-moh-opsound-wav
}
