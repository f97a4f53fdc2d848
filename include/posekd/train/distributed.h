// Data-parallel training over processes and machines: LibTorch's c10d TCPStore (rendezvous) and
// ProcessGroupGloo (collectives), configured the torchrun way. No protocol of our own: every
// exchange below is one Gloo collective.
//
// Every rank runs the same program on its own shard of each global batch; gradients are averaged in
// buckets while backward still runs (GradSync); rank 0 alone writes logs and checkpoints. A rank that
// dies closes its sockets and the others fail at their next collective with a clear error; a rank
// that hangs is given up on after `timeout_s`.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "posekd/core/collective.h"

namespace posekd::train {

struct DistOptions {
  int rank = -1;              // -1: from $RANK (else 0)
  int world_size = -1;        // -1: from $WORLD_SIZE (else 1)
  int local_rank = -1;        // -1: from $LOCAL_RANK (else rank)
  int local_world_size = -1;  // -1: from $LOCAL_WORLD_SIZE (else 1, or world_size on one machine)
  std::string master_addr;    // "": from $MASTER_ADDR (else 127.0.0.1)
  int master_port = -1;       // -1: from $MASTER_PORT (else 29500)
  double timeout_s = 1800;    // rendezvous and every collective (PyTorch's default: 30 minutes)
};

// Fills every unset field from the torchrun environment variables, then defaults. Throws
// posekd::Error on malformed values (a rank outside [0, world), a port outside [1, 65535], ...).
DistOptions resolve_dist_options(const DistOptions& flags);

class Distributed : public Collective {
 public:
  // Rendezvous at master_addr:master_port (rank 0 serves the TCPStore) and creates the Gloo group.
  // Throws posekd::Error naming the address when the rendezvous times out.
  explicit Distributed(const DistOptions& resolved);
  ~Distributed() override;
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  double timeout_s() const { return timeout_s_; }

  // In place: root's values end up on every rank (float/int tensors, contiguous).
  void broadcast(std::vector<torch::Tensor>& tensors, int root = 0);
  // In place sum over ranks.
  void allreduce_sum(torch::Tensor& t);
  void allreduce_max(torch::Tensor& t);
  // Collective: several tensors in one exchange per dtype (packed flat), in place.
  void allreduce_sum(std::vector<torch::Tensor>& tensors) override;
  void allreduce_max(std::vector<torch::Tensor>& tensors) override;
  // Element-wise sum / max of small vectors of doubles (f64 on the wire).
  std::vector<double> sum(const std::vector<double>& v);
  std::vector<double> max(const std::vector<double>& v);
  // Root's bytes on every rank.
  std::string broadcast_bytes(const std::string& bytes, int root = 0);
  void barrier();

  // Asynchronous in-place sum; `wait` blocks until done (throws posekd::Error on a lost rank).
  struct Pending;
  std::shared_ptr<Pending> allreduce_sum_async(torch::Tensor& t);
  void wait(const std::shared_ptr<Pending>& p);

 private:
  void allreduce_many(std::vector<torch::Tensor>& tensors, bool max);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_ = 1;
  double timeout_s_ = 1800;
};

// Averages the gradients of `params` over the ranks, bucket by bucket as backward produces them
// (hooks on the parameters launch one asynchronous all-reduce per full bucket, in a fixed bucket
// order so every rank issues the same sequence of collectives). Call finish() after backward():
// it reduces what is left (a parameter backward did not reach counts as a zero gradient), waits, and
// writes the averages into each parameter's .grad. Parameters that do not require grad are ignored;
// a bucket holding a parameter backward never reaches waits for finish() (no overlap for it).
// One backward per finish(). Hooks are removed by the destructor.
class GradSync {
 public:
  GradSync(Distributed& dist, const std::vector<torch::Tensor>& params, std::int64_t bucket_bytes = 256 * 1024);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  void finish();
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Buckets whose all-reduce started inside backward() at the last step (overlap achieved).
  int launched_during_backward() const { return last_overlap_; }

 private:
  struct Bucket {
    std::vector<int> params;  // indices into params_
    std::vector<std::int64_t> offsets;
    torch::Tensor flat;  // f32, sum of sizes
    int pending = 0;
    bool launched = false;
    std::shared_ptr<Distributed::Pending> work;
  };
  void on_grad(int param_index, const torch::Tensor& grad);
  void launch_ready();
  void reset();

  Distributed& dist_;
  std::vector<torch::Tensor> params_;
  std::vector<int> bucket_of_, slot_of_;
  std::vector<unsigned> hook_ids_;
  std::vector<bool> got_;
  std::vector<Bucket> buckets_;
  int next_launch_ = 0;
  int launched_in_backward_ = 0;
  int last_overlap_ = 0;
};

// Splits a global batch over ranks: each rank trains on global_batch / world images. Throws
// posekd::Error when it does not divide evenly.
int per_rank_batch(int global_batch, int world_size);

}  // namespace posekd::train
