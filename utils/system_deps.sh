#!/usr/bin/env bash
# Install the Debian packages that parts of the toolkit and its tests use (JACK for the live
# streaming test, Opus tools for the baseline, ...). Safe to re-run: only missing packages are
# installed. Without root or apt-get, or with AUDIODEC_SYSTEM_DEPS=0 (a workstation whose root
# should not get SLURM's and JACK's daemons), it prints what is missing and returns 0, so the tests
# that need a package skip with a message instead of failing the whole run.
set -uo pipefail

# One package per line; append what your part needs.
PACKAGES=(
    libtcmalloc-minimal4  # the inference CLIs run with it (utils/runtime/cpu_process.py)
    gcc  # compiles the native streaming engine on first use (utils/runtime/native_build.py)
    g++  # torch.compile's CPU kernels (training's compile option, tests/test_trainer.py)
    jackd2
    libportaudio2
    opus-tools
    munge
    slurm-client
    slurmctld
    slurmd
)

if [ "$(dpkg --print-architecture 2>/dev/null)" != arm64 ]; then
    # the engine's kernel self-test for arm64 (tests/test_native_selftest.py), cross-built and run
    # under qemu; an arm64 machine builds and runs it with its own gcc
    PACKAGES+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross libgomp1-arm64-cross qemu-user)
fi

# What is installed, by name and by what it provides (Debian 13 renamed libtcmalloc-minimal4 to
# libtcmalloc-minimal4t64, which provides the old name that apt-get still installs it by).
installed=" $(dpkg-query -W -f='${db:Status-Abbrev} ${Package}, ${Provides}\n' 2>/dev/null \
    | awk '/^ii/ {$1 = ""; print}' | sed -E 's/\([^)]*\)//g; s/,/ /g' | tr -s ' \n' '  ') "
missing=()
for pkg in ${PACKAGES[@]+"${PACKAGES[@]}"}; do
    [[ "$installed" == *" $pkg "* ]] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "${AUDIODEC_SYSTEM_DEPS:-1}" = 0 ]; then
    echo "system_deps: missing ${missing[*]-} (not installed: AUDIODEC_SYSTEM_DEPS=0); the tests that use them will skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "system_deps: missing ${missing[*]-} (need root and apt-get); the tests that use them will skip" >&2
    exit 0
fi
echo "system_deps: installing ${missing[*]-} with apt-get, for the tests that use them" \
    "(AUDIODEC_SYSTEM_DEPS=0 leaves them out)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
if ! apt-get install -y -qq --no-install-recommends ${missing[@]+"${missing[@]}"} >/dev/null 2>&1; then
    # one package this system lacks must not keep the others out: each on its own
    for pkg in ${missing[@]+"${missing[@]}"}; do
        apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
            || echo "system_deps: apt-get install $pkg failed; the tests that use it will skip" >&2
    done
fi
exit 0
