// Deterministic multi-threaded batch loader with a bounded prefetch window and exact resume.
#pragma once
#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "posekd/data/coco.h"
#include "posekd/data/sample.h"

namespace posekd::data {

struct Batch {
  torch::Tensor image;     // [B,3,S,S]
  torch::Tensor heatmaps;  // [B,19,G,G]
  torch::Tensor pafs;      // [B,38,G,G]
  torch::Tensor mask;      // [B,1,G,G]
  std::vector<int64_t> image_ids;
  std::vector<int64_t> views;  // augmentation view of each sample (SampleConfig::augment; 0 without)
  int64_t epoch = 0;           // epoch of the batch's first sample
};

// Where a loader stands: the next sample to consume is position `position` of epoch `epoch`'s
// permutation. Bad samples consumed so far are counted (first 5 paths kept).
struct LoaderState {
  int64_t epoch = 0;
  int64_t position = 0;
  int64_t bad_count = 0;
  std::vector<std::string> bad_examples;
};

// Samples are the dataset's images that have at least one non-crowd person with
// num_keypoints > 0 (has_keypoint_person), in dataset order; each image is one sample with all its
// persons. Epoch e visits them in a permutation drawn from std::mt19937_64 seeded with
// seed_seq{seed, e} (Fisher-Yates), and epochs follow each other as one stream: a batch takes the
// next batch_size GOOD samples of the stream (it may span two epochs). Bad samples (prepare_sample
// ok == false) are counted and skipped. The batch sequence depends only on the dataset, config,
// batch size and seed, never on the number of workers or the prefetch depth. With
// config.augment.enabled, sample i of epoch e is augmented with draw_augment(augment, seed,
// augment_view(augment, e), image id): also a function of the stream position alone.
//
// Sharding (data-parallel training): with shard {rank, count}, the stream is cut into global batches
// of batch_size * count samples and this loader yields only its rank's contiguous slice of each:
// samples [k*B + rank*b, k*B + (rank+1)*b) of global batch k (b = batch_size, B = b * count). With no
// bad sample, the union of the ranks' k-th batches is exactly the k-th batch of one unsharded loader
// of batch B with the same seed. A bad sample is replaced by the next sample of the rank's own slice
// stream. state() is in global stream terms (rounded up to a global batch boundary), so a checkpoint
// resumes with any number of ranks.
struct Shard {
  int rank = 0;
  int count = 1;
};

class Loader {
 public:
  // workers >= 0 (0 = prepare on the calling thread); prefetch = batches prepared ahead (>= 1).
  // Throws posekd::Error when there is no sample or batch_size < 1.
  Loader(const CocoDataset& dataset, const SampleConfig& config, int batch_size, uint64_t seed, int workers = 2,
         int prefetch = 4, const LoaderState& start = {}, Shard shard = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch. Throws posekd::Error if a whole epoch's worth of consecutive samples is bad.
  Batch next();

  LoaderState state() const;
  void restore(const LoaderState& state);  // continue exactly as the loader that produced `state`

  int64_t bad_count() const;
  std::vector<std::string> bad_examples() const;
  int64_t num_samples() const { return static_cast<int64_t>(images_.size()); }
  int64_t batches_per_epoch() const { return (num_samples() + batch_size_ - 1) / batch_size_; }

  // The permutation of sample indices for an epoch (exposed for tests and tools).
  static std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n);

 private:
  int64_t sample_index(int64_t global_seq);     // global stream sequence number -> index into images_
  int64_t global_seq(int64_t seq) const;        // this loader's sequence number -> global stream number
  int64_t seq_of_global(int64_t global) const;  // inverse, rounded up to a global batch boundary
  Sample prepare(int64_t seq);
  void start_workers();
  void stop_workers();
  void worker_loop();

  std::vector<CocoImage> images_;
  std::string image_dir_;
  SampleConfig config_;
  int batch_size_;
  uint64_t seed_;
  int workers_;
  Shard shard_;
  int64_t window_;  // samples prepared ahead of the consumer

  // Consumer position in this loader's own sample stream (= global epoch * N + position unsharded).
  int64_t cursor_ = 0;
  int64_t bad_count_ = 0;
  std::vector<std::string> bad_examples_;

  // Permutation cache (guarded by mu_ when workers run).
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> perms_;

  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::map<int64_t, Sample> ready_;
  int64_t next_seq_ = 0;  // next sequence number a worker will take
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace posekd::data
