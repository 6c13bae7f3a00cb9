#!/usr/bin/env bash
# `make compose-test`: prove docker-compose.yml with podman on this machine.
#   1. installs podman, runc, debootstrap, docker-compose (scripts/install-system-deps.sh compose) and
#      podman-compose 1.6.0 from PyPI into build/compose-venv, if missing;
#   2. makes the base image localhost/debian:bookworm-slim with debootstrap if missing (kept cached);
#   3. builds the four images of docker/Dockerfile (redis, janus, nginx-rtmp, app), timed;
#   4. runs tests/compose_check.py: up, healthchecks, publish, task, decode, scale, kill, resume, down;
#   5. removes the images it built unless MPU_COMPOSE_KEEP_IMAGES=1 (the base image stays).
# Ports: the MPU_*_PORT variables (the Makefile passes ports apart from `mpu stack`'s and the tests').
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
python="${PYTHON:-$root/.venv/bin/python}"
tag="${MPU_IMAGE_TAG:-compose-test}"
export MPU_IMAGE_TAG="$tag"
export CONTAINERS_CONF="$root/docker/containers.conf"
export MPU_PODMAN_COMPOSE="${MPU_PODMAN_COMPOSE:-$root/build/compose-venv/bin/podman-compose}"
base_image="${MPU_BASE_IMAGE:-localhost/debian:bookworm-slim}"

# One compose test at a time on a machine (fixed ports, one project name, one image tag): a second
# run waits for the first (up to 30 minutes). flock -o: the containers never inherit the lock.
if [ "${MPU_COMPOSE_TEST_LOCKED:-}" != 1 ]; then
  exec env MPU_COMPOSE_TEST_LOCKED=1 flock -o -w 1800 /tmp/rtc-mpu-compose-test.lock "$root/scripts/compose-test.sh" "$@"
fi

scripts/install-system-deps.sh compose
if [ ! -x "$MPU_PODMAN_COMPOSE" ]; then
  python3 -m venv "$root/build/compose-venv"
  "$root/build/compose-venv/bin/pip" install --quiet podman-compose==1.6.0
fi
"$MPU_PODMAN_COMPOSE" --version | head -1

docker/make-base-image.sh "$base_image"

# pip and npm inside the build trust the host's CA bundle (the registries may be reached through a
# TLS-inspecting proxy); the bundle is mounted for the build only, never copied into an image.
cert_mount=""
ca_bundle=""
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cert_mount="-v /etc/ssl/certs:/run/host-certs:ro"
  ca_bundle=/run/host-certs/ca-certificates.crt
fi
# The images are built from a snapshot of the build context, so that both builds below see the same
# files even while the working tree changes.
context="$(mktemp -d /tmp/mpu-compose-context.XXXXXX)"
tar -C "$root" -cf - pyproject.toml README.md .dockerignore docker-compose.yml docker src deploy \
  scripts/install-system-deps.sh | tar -C "$context" -xf -
images=()
cleanup() {
  rm -rf "$context"
  if [ "${MPU_COMPOSE_KEEP_IMAGES:-0}" != 1 ]; then
    podman rmi --force "${images[@]}" >/dev/null 2>&1 || true
    # and the build layers they leave behind (only this project's: the label of docker/Dockerfile)
    podman image prune --force --filter label=io.rtc-mpu.project=rtc-mpu >/dev/null 2>&1 || true
    echo "compose-test: removed the images it built (kept $base_image; MPU_COMPOSE_KEEP_IMAGES=1 keeps them)"
  fi
}
trap cleanup EXIT
seconds_since() { local ms=$((($(date +%s%N) - $1) / 1000000)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
build_start=$(date +%s%N)
for target in redis janus nginx-rtmp app; do
  image="localhost/rtc-mpu-$target:$tag"
  start=$(date +%s%N)
  # shellcheck disable=SC2086 # $cert_mount is two words or none
  podman build --quiet --network host $cert_mount --build-arg "CA_BUNDLE=$ca_bundle" --build-arg "BASE_IMAGE=$base_image" \
    -f "$context/docker/Dockerfile" --target "$target" -t "$image" "$context" >/dev/null
  images+=("$image")
  printf 'compose-test: built %s in %s s (%s)\n' "$image" "$(seconds_since "$start")" \
    "$(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
done
echo "compose-test: build_seconds = $(seconds_since "$build_start")"

# The compose file's own build sections (what `docker compose build` runs) describe the same images:
# podman-compose build, from the cache, must leave every image id as it is.
ids_before="$(podman image inspect --format '{{.Id}}' "${images[@]}")"
env_file="$(mktemp /tmp/mpu-compose-build.XXXXXX.env)"
printf 'MPU_IMAGE_TAG=%s\nMPU_BASE_IMAGE=%s\n' "$tag" "$base_image" > "$env_file"
if ! MPU_ENV_FILE="$env_file" "$MPU_PODMAN_COMPOSE" -p mpu-compose-build --env-file "$env_file" \
  --podman-build-args="--network host $cert_mount" -f "$context/docker-compose.yml" build \
  --build-arg "CA_BUNDLE=$ca_bundle" >"$env_file.log" 2>&1; then
  cat "$env_file.log" >&2
  rm -f "$env_file" "$env_file.log"
  echo "compose-test: podman-compose build failed" >&2
  exit 1
fi
rm -f "$env_file" "$env_file.log"
if [ "$(podman image inspect --format '{{.Id}}' "${images[@]}")" != "$ids_before" ]; then
  echo "compose-test: podman-compose build made other images than docker/Dockerfile's targets" >&2
  exit 1
fi
echo "compose-test: podman-compose build (the file's build sections) gives the same images"

"$python" -m tests.compose_check
