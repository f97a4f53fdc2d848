#include "posekd/data/loader.h"

#include <fmt/format.h>

#include <random>

#include "posekd/core/error.h"
#include "posekd/data/coco_json.h"

namespace posekd::data {

namespace {
constexpr size_t kMaxBadExamples = 5;
}

std::vector<int64_t> Loader::epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(epoch),
                    static_cast<uint32_t>(static_cast<uint64_t>(epoch) >> 32)};
  std::mt19937_64 rng(seq);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

Loader::Loader(const CocoDataset& dataset, const SampleConfig& config, int batch_size, uint64_t seed, int workers,
               int prefetch, const LoaderState& start, Shard shard)
    : image_dir_(dataset.image_dir),
      config_(config),
      batch_size_(batch_size),
      seed_(seed),
      workers_(std::max(0, workers)),
      shard_(shard) {
  if (batch_size < 1) throw Error(fmt::format("loader: batch size must be >= 1 (got {})", batch_size));
  if (shard.count < 1 || shard.rank < 0 || shard.rank >= shard.count)
    throw Error(fmt::format("loader: shard {} of {} is invalid", shard.rank, shard.count));
  for (const auto& im : dataset.images)
    if (has_keypoint_person(im)) {
      images_.push_back(im);
      for (auto& p : images_.back().persons) p.segmentation = Segmentation();  // only crowds' are used
    }
  if (images_.empty()) fail_file(dataset.annotation_path, "no image with a person with keypoints: nothing to train on");
  if (start.epoch < 0 || start.position < 0 || start.position >= num_samples())
    throw Error(fmt::format("loader: cannot start from state (epoch {}, position {}) with {} samples", start.epoch,
                            start.position, num_samples()));
  window_ = static_cast<int64_t>(std::max(1, prefetch)) * batch_size_;
  cursor_ = next_seq_ = seq_of_global(start.epoch * num_samples() + start.position);
  bad_count_ = start.bad_count;
  bad_examples_ = start.bad_examples;
  start_workers();
}

Loader::~Loader() { stop_workers(); }

int64_t Loader::global_seq(int64_t seq) const {
  if (shard_.count == 1) return seq;
  const int64_t b = batch_size_;
  return (seq / b) * b * shard_.count + shard_.rank * b + seq % b;
}

int64_t Loader::seq_of_global(int64_t global) const {
  if (shard_.count == 1) return global;
  const int64_t big = static_cast<int64_t>(batch_size_) * shard_.count;
  return (global + big - 1) / big * batch_size_;
}

int64_t Loader::sample_index(int64_t seq) {
  const int64_t n = num_samples();
  const int64_t epoch = seq / n;
  auto it = perms_.find(epoch);
  if (it == perms_.end()) {
    // Drop permutations of epochs the consumer has left behind.
    const int64_t cur_epoch = global_seq(cursor_) / n;
    for (auto e = perms_.begin(); e != perms_.end();) e = e->first < cur_epoch ? perms_.erase(e) : std::next(e);
    it = perms_.emplace(epoch, std::make_shared<const std::vector<int64_t>>(epoch_permutation(seed_, epoch, n))).first;
  }
  return (*it->second)[static_cast<size_t>(seq % n)];
}

Sample Loader::prepare(int64_t seq) {
  int64_t idx;
  const int64_t global = global_seq(seq);
  {
    std::lock_guard<std::mutex> lock(mu_);
    idx = sample_index(global);
  }
  const CocoImage& im = images_[static_cast<size_t>(idx)];
  if (!config_.augment.enabled) return prepare_sample(im, image_dir_, config_);
  const int64_t view = augment_view(config_.augment, global / num_samples());
  const AugmentParams p = draw_augment(config_.augment, seed_, view, im.id);
  Sample s = prepare_sample(im, image_dir_, config_, &p);
  s.view = view;
  return s;
}

void Loader::worker_loop() {
  for (;;) {
    int64_t seq;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_work_.wait(lock, [&] { return stop_ || next_seq_ < cursor_ + window_; });
      if (stop_) return;
      seq = next_seq_++;
    }
    Sample s = prepare(seq);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      ready_.emplace(seq, std::move(s));
    }
    cv_done_.notify_all();
  }
}

void Loader::start_workers() {
  stop_ = false;
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { worker_loop(); });
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  cv_done_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  ready_.clear();
  stop_ = false;
}

Batch Loader::next() {
  std::vector<Sample> samples;
  samples.reserve(static_cast<size_t>(batch_size_));
  int64_t first_epoch = -1;
  int64_t consecutive_bad = 0;
  while (static_cast<int>(samples.size()) < batch_size_) {
    Sample s;
    int64_t seq;
    if (workers_ == 0) {
      seq = cursor_;
      s = prepare(seq);
      std::lock_guard<std::mutex> lock(mu_);
      ++cursor_;
      next_seq_ = cursor_;
    } else {
      std::unique_lock<std::mutex> lock(mu_);
      seq = cursor_;
      cv_done_.wait(lock, [&] { return ready_.count(seq) > 0; });
      auto it = ready_.find(seq);
      s = std::move(it->second);
      ready_.erase(it);
      ++cursor_;
      lock.unlock();
      cv_work_.notify_all();
    }
    if (!s.ok) {
      std::lock_guard<std::mutex> lock(mu_);
      ++bad_count_;
      if (bad_examples_.size() < kMaxBadExamples) bad_examples_.push_back(s.error);
      if (++consecutive_bad >= num_samples())
        throw Error(fmt::format("loader: {} consecutive samples could not be read (e.g. {})", consecutive_bad,
                                bad_examples_.empty() ? std::string("?") : bad_examples_.front()));
      continue;
    }
    consecutive_bad = 0;
    if (first_epoch < 0) first_epoch = global_seq(seq) / num_samples();
    samples.push_back(std::move(s));
  }
  Batch b;
  std::vector<torch::Tensor> im, hm, pf, mk;
  for (auto& s : samples) {
    im.push_back(s.image);
    hm.push_back(s.heatmaps);
    pf.push_back(s.pafs);
    mk.push_back(s.mask);
    b.image_ids.push_back(s.image_id);
    b.views.push_back(s.view);
  }
  b.image = torch::stack(im);
  b.heatmaps = torch::stack(hm);
  b.pafs = torch::stack(pf);
  b.mask = torch::stack(mk);
  b.epoch = first_epoch;
  return b;
}

LoaderState Loader::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  LoaderState st;
  const int64_t g =
      shard_.count == 1 ? cursor_ : (cursor_ + batch_size_ - 1) / batch_size_ * batch_size_ * shard_.count;
  st.epoch = g / num_samples();
  st.position = g % num_samples();
  st.bad_count = bad_count_;
  st.bad_examples = bad_examples_;
  return st;
}

void Loader::restore(const LoaderState& st) {
  if (st.epoch < 0 || st.position < 0 || st.position >= num_samples())
    throw Error(fmt::format("loader: cannot restore state (epoch {}, position {}) with {} samples", st.epoch,
                            st.position, num_samples()));
  stop_workers();
  {
    std::lock_guard<std::mutex> lock(mu_);
    cursor_ = next_seq_ = seq_of_global(st.epoch * num_samples() + st.position);
    bad_count_ = st.bad_count;
    bad_examples_ = st.bad_examples;
    perms_.clear();
  }
  start_workers();
}

int64_t Loader::bad_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bad_count_;
}

std::vector<std::string> Loader::bad_examples() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bad_examples_;
}

}  // namespace posekd::data
