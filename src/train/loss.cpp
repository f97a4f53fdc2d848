#include "posekd/train/loss.h"

#include <torch/torch.h>

namespace posekd::train {

torch::Tensor l2_loss(const torch::Tensor& pred, const torch::Tensor& target, const torch::Tensor& mask) {
  const double b = static_cast<double>(pred.size(0));
  torch::Tensor d = pred - target;
  if (mask.defined()) d = d * mask;
  return d.pow(2).sum() / 2.0 / b;
}

LossParts pose_loss(const torch::Tensor& heat, const torch::Tensor& paf, const torch::Tensor& gt_heat,
                    const torch::Tensor& gt_paf, const torch::Tensor& mask, const torch::Tensor& teacher_heat,
                    const torch::Tensor& teacher_paf, const LossWeights& w) {
  torch::Tensor s = l2_loss(heat, gt_heat, mask) + l2_loss(paf, gt_paf, mask);
  LossParts out;
  out.student = s.detach();
  if (teacher_heat.defined()) {
    torch::Tensor d = l2_loss(heat, teacher_heat.detach(), {}) + l2_loss(paf, teacher_paf.detach(), {});
    out.distill = d.detach();
    out.total = w.student * s + w.distill * d;
  } else {
    out.distill = torch::zeros({}, heat.options());
    out.total = s;
  }
  return out;
}

LossParts teacher_loss(const std::vector<torch::Tensor>& stages, const torch::Tensor& gt_heat,
                       const torch::Tensor& gt_paf, const torch::Tensor& mask) {
  torch::Tensor hm = torch::zeros({}), paf = torch::zeros({});
  for (size_t s = 0; s + 1 < stages.size(); s += 2) {
    hm = hm + l2_loss(stages[s].to(torch::kFloat), gt_heat, mask);
    paf = paf + l2_loss(stages[s + 1].to(torch::kFloat), gt_paf, mask);
  }
  return LossParts{hm + paf, hm.detach(), paf.detach()};
}

}  // namespace posekd::train
