#include "posekd/train/step.h"

#include <cmath>

#include "posekd/train/distributed.h"
#include "posekd/train/fused_adam.h"

namespace posekd::train {

void set_learning_rate(torch::optim::Adam& optimizer, double lr) {
  for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
}

StepOutcome train_step(torch::optim::Adam& optimizer, const std::function<LossParts()>& forward_loss,
                       const StepOptions& o) {
  clear_grads(optimizer);
  const LossParts lp = forward_loss();
  StepOutcome r;
  r.loss = lp.total.item<double>();
  r.student = lp.student.item<double>();
  r.distill = lp.distill.item<double>();
  if (std::isnan(r.loss)) r.loss = std::nan("");  // one spelling in logs ("nan"), whatever the sign bit
  r.finite = std::isfinite(r.loss);
  r.stop = o.stop_requested;
  // Without ranks to keep in step, a non-finite loss skips the backward pass too.
  if (r.finite || o.dist != nullptr) lp.total.backward();
  if (o.dist != nullptr) {
    if (o.sync != nullptr) o.sync->finish();
    const int world = o.dist->world_size();
    const auto agg = o.dist->sum({r.finite ? r.loss : 0.0, r.finite ? r.student : 0.0, r.finite ? r.distill : 0.0,
                                  r.finite ? 0.0 : 1.0, r.stop ? 1.0 : 0.0});
    r.finite = agg[3] == 0;
    r.stop = agg[4] > 0;
    r.loss = r.finite ? agg[0] / world : std::nan("");
    r.student = agg[1] / world;
    r.distill = agg[2] / world;
  }
  if (!r.finite) return r;
  if (o.lr >= 0) set_learning_rate(optimizer, o.lr);
  fused_adam_step(optimizer);
  return r;
}

}  // namespace posekd::train
