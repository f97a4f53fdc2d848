// The ai8x device mode (ai8x.set_device): MAX78000 = 85, simulate = integer "-8" evaluation mode.
//
// Design choice: the device mode is held PER LAYER (and so per model), never process-wide.
// Python ai8x reads a module-global `ai8x.dev` at forward time, so switching to simulate silently
// changes every existing QAT model (see fixtures/ai8x/README.md). Here each ai8x::Layer owns a
// copy of its Device, set at construction and changed only by Layer::set_device (a Student
// propagates it to all of its layers). Two models in different modes can coexist.
#pragma once

namespace posekd::ai8x {

struct Device {
  int device = 85;         // 85 = MAX78000 (the only device whose limits posekd checks)
  bool simulate = false;   // true = integer "-8" evaluation (ai8x.md 6.1)
  bool round_avg = false;  // average-pool rounding only (no average pooling is used by posekd)
};

}  // namespace posekd::ai8x
