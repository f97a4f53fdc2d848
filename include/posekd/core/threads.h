// Thread settings. LibTorch defaults to one thread here, so every program calls this.
#pragma once

namespace posekd {

// Number of hardware threads (at least 1).
int hardware_threads();

// Sets LibTorch's intra-op threads (and inter-op on first call). n <= 0 means all cores.
// Returns the number set.
int set_compute_threads(int n);

}  // namespace posekd
