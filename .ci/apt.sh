# Sourced by the .ci scripts. apt_install PKG...: installs Debian packages when this
# runs as root where apt-get exists (retrying once after `apt-get update`); status 1
# if it cannot, so the caller can skip its check and say why.
apt_install() {
    { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; } || return 1
    apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
    apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null 2>&1
}
