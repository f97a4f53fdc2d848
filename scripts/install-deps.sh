#!/usr/bin/env bash
# Installs exactly the Debian 12 packages posekd needs to build, test and run. Idempotent:
# does nothing when everything is already installed.
#   --firmware  also the Cortex-M4 cross toolchain and emulator of `make firmware-test`
set -euo pipefail
PKGS=(
  build-essential cmake make git
  libtorch-dev                     # tensors, autograd, Adam, oneDNN convolutions, c10d Gloo
  libopenblas0-openmp              # an optimised libblas.so.3 for LibTorch (else netlib's reference BLAS:
                                   # single-threaded 1x1 convolutions run 3-4x slower), on the OpenMP pool
  libgloo-dev                      # gloo headers for LibTorch's ProcessGroupGloo (distributed training)
  libdnnl-dev                      # oneDNN headers (the library LibTorch links): bf16 convs with fp32 output
  libopencv-imgcodecs-dev libopencv-imgproc-dev libopencv-core-dev
  libopencv-videoio-dev            # posekd predict: video files and cameras in, annotated video out
  nlohmann-json3-dev libcli11-dev libyaml-cpp-dev libfmt-dev
  libgtest-dev libbenchmark-dev
  python3-torch python3-numpy python3-yaml   # tests: prove Python torch.load reads our files
)
if [ "${1:-}" = "--firmware" ]; then
  PKGS+=(gcc-arm-none-eabi libnewlib-arm-none-eabi   # the C pose decoder cross-compiled for the MAX78000's Cortex-M4F
         qemu-system-arm)                             # ... and run on an emulated Cortex-M4 (mps2-an386)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
