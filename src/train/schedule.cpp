#include "posekd/train/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "posekd/core/error.h"

namespace posekd::train {

namespace {

double phase_rate(const std::string& kind, double base, std::int64_t warmup, double end, std::int64_t i,
                  std::int64_t length) {
  if (warmup > 0 && i < warmup) return base * static_cast<double>(i + 1) / static_cast<double>(warmup);
  const double span = static_cast<double>(std::max<std::int64_t>(1, length - warmup));
  const double t = std::clamp(static_cast<double>(i - warmup) / span, 0.0, 1.0);
  if (kind == "cosine") return base * (end + (1 - end) * 0.5 * (1 + std::cos(3.14159265358979323846 * t)));
  if (kind == "step") return t >= 0.95 ? base * end : t >= 0.8 ? base * std::sqrt(end) : base;
  return base;
}

}  // namespace

double LrSchedule::at(std::int64_t batch) const {
  if (qat_start >= 0 && batch >= qat_start)
    return phase_rate(kind, qat_lr, qat_warmup, end_factor, batch - qat_start, total - qat_start);
  // The float phase follows the curve of the whole run (a run without QAT), cut at the switch.
  return phase_rate(kind, lr, warmup, end_factor, batch, total);
}

void LrSchedule::validate(const std::string& who) const {
  if (kind != "constant" && kind != "cosine" && kind != "step")
    throw Error(fmt::format("{}: --lr-schedule must be constant, cosine or step (got '{}')", who, kind));
  if (!(lr > 0)) throw Error(fmt::format("{}: --lr must be > 0", who));
  if (!(qat_lr > 0)) throw Error(fmt::format("{}: --qat-lr must be > 0", who));
  if (!(end_factor >= 0 && end_factor <= 1)) throw Error(fmt::format("{}: --lr-end-factor must be in [0, 1]", who));
  if (warmup < 0 || qat_warmup < 0) throw Error(fmt::format("{}: --warmup and --qat-warmup must be >= 0", who));
}

std::string LrSchedule::describe() const {
  std::string s = fmt::format("{} lr {}", kind, lr);
  if (warmup > 0) s += fmt::format(", warm-up {}", warmup);
  if (kind != "constant") s += fmt::format(", end x{}", end_factor);
  if (qat_start >= 0) s += fmt::format("; QAT from batch {} at lr {}, warm-up {}", qat_start, qat_lr, qat_warmup);
  return s;
}

}  // namespace posekd::train
