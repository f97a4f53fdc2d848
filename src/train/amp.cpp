#include "posekd/train/amp.h"

#include <ATen/autocast_mode.h>

namespace posekd::train {

AutocastGuard::AutocastGuard(Precision p) : on_(p == Precision::bf16) {
  if (!on_) return;
  prev_enabled_ = at::autocast::is_cpu_enabled();
  prev_dtype_ = static_cast<int>(at::autocast::get_autocast_cpu_dtype());
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!on_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();  // casts of the weights
  at::autocast::set_cpu_enabled(prev_enabled_);
  at::autocast::set_autocast_cpu_dtype(static_cast<at::ScalarType>(prev_dtype_));
}

}  // namespace posekd::train
