#!/usr/bin/env bash
# Install the Debian/Ubuntu packages rtc-mpu needs, if any is missing.
# Usage: scripts/install-system-deps.sh [test|stack|bench]
#   test  : what the integration tests start: Redis, Janus, nginx with the RTMP module, the browser
#           page's scripts (janus.js, webrtc-adapter), Chromium (a real browser publishes in a test),
#           the CJK fonts of text and clock overlays (src/rtc_mpu/mixer/overlays/text.py FONT_FILES),
#           the ffmpeg CLI (a third-party HLS packager and RTMP publisher for the ingest tests),
#           and npm (hls.js for the dashboard) unless an npm is already on the PATH
#   stack : the local stack (`mpu stack up`, `make demo`): the test set plus the ffmpeg CLI (ffplay)
#   bench : the services, the fonts and the ffmpeg CLI (the baseline in bench/)
#   compose : what `make compose-test` runs containers with: podman, runc, debootstrap (the base image),
#           docker-compose (validates docker-compose.yml); podman-compose comes from PyPI (Makefile)
#   image-redis | image-janus | image-nginx | image-app : what each container image of docker/Dockerfile
#           installs: the same packages as the local stack (image-app: the fonts of the mixer's texts)
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -euo pipefail
what="${1:-test}"

redis_packages=(redis-server)
janus_packages=(janus)
nginx_packages=(nginx libnginx-mod-rtmp libjs-janus-gateway libjs-webrtc-adapter)
packages=("${redis_packages[@]}" "${janus_packages[@]}" "${nginx_packages[@]}")
fonts=(fonts-wqy-microhei fonts-wqy-zenhei fonts-arphic-ukai fonts-arphic-uming)
case "$what" in
  test) packages+=(chromium ffmpeg "${fonts[@]}") ;;
  stack) packages+=(ffmpeg "${fonts[@]}") ;;
  bench) packages+=(ffmpeg "${fonts[@]}") ;;
  compose) packages=(podman runc debootstrap docker-compose) ;;
  image-redis) packages=("${redis_packages[@]}") ;;
  image-janus) packages=("${janus_packages[@]}") ;;
  image-nginx) packages=("${nginx_packages[@]}") ;;
  image-app) packages=("${fonts[@]}") ;;
  *) echo "usage: $0 [test|stack|bench|compose|image-redis|image-janus|image-nginx|image-app]" >&2; exit 2 ;;
esac
# npm installs hls.js for the dashboard's player at build time (`make dashboard-js`); a Node.js from
# another source may already bring its own npm: only then is Debian's npm not needed.
if [ "$what" = test ] && ! command -v npm >/dev/null 2>&1; then
  packages+=(npm)
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "rtc-mpu needs these Debian packages: ${missing[*]}" >&2
  echo "run as root: $cmd" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
