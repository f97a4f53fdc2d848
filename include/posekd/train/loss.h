// The seed's distillation loss (spec/seed-pipeline.md "Loop"), with the crowd mask (FIX):
//   S = sum(((h - H) * M)^2) / 2 / B + sum(((p - P) * M)^2) / 2 / B     (ground truth, masked)
//   D = sum((h - Th)^2) / 2 / B + sum((p - Tp)^2) / 2 / B              (teacher, unmasked)
//   loss = ws * S + wd * D            (no teacher: loss = S)
#pragma once
#include <torch/types.h>

#include <vector>

namespace posekd::train {

struct LossWeights {
  double student = 0.3;  // --kd-student-wt
  double distill = 0.7;  // --kd-distill-wt
};

struct LossParts {
  torch::Tensor total;    // 0-dim, differentiable
  torch::Tensor student;  // 0-dim, detached
  torch::Tensor distill;  // 0-dim, detached (0 without a teacher)
};

// Sum of squared (masked) differences / 2 / B. `mask` is [B,1,h,w] (broadcast over channels) or undefined.
torch::Tensor l2_loss(const torch::Tensor& pred, const torch::Tensor& target, const torch::Tensor& mask);

// heat/paf: student outputs; gt_*: targets; mask: [B,1,h,w] crowd mask or undefined;
// teacher_*: teacher outputs (detached here) or undefined for student-only training.
LossParts pose_loss(const torch::Tensor& heat, const torch::Tensor& paf, const torch::Tensor& gt_heat,
                    const torch::Tensor& gt_paf, const torch::Tensor& mask, const torch::Tensor& teacher_heat,
                    const torch::Tensor& teacher_paf, const LossWeights& w);

// The teacher's training loss (upstream Lightweight-OpenPose): the masked L2 of every stage's
// heatmaps and PAFs, summed. `stages` alternates heatmaps and PAFs (the teacher's forward); they may
// be bf16 (autocast) and are compared in fp32. student = the heatmap part, distill = the PAF part.
LossParts teacher_loss(const std::vector<torch::Tensor>& stages, const torch::Tensor& gt_heat,
                       const torch::Tensor& gt_paf, const torch::Tensor& mask);

}  // namespace posekd::train
