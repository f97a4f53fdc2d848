// Teacher-output cache: the frozen teacher's 16x16 heatmaps + PAFs of every training image, stored
// once as fp16 in a memory-mapped file (POSIX mmap, MAP_SHARED) and reused by every later step.
//
// Why it is valid: posekd has NO data augmentation, so the student input of an image (and hence the
// teacher's output for it) never changes between epochs. When augmentation is added, the teacher
// input differs per step and the cache must be bypassed (teacher run online on every batch); the
// key below then no longer describes the teacher input and must not be used.
//
// File layout (little endian, version 1):
//   [0, 4096)            header: magic "POSEKDTC", version, geometry, CacheKey, header checksum
//   [4096, 4096+16*N)    slot table: N x {int64 image_id, uint32 valid, uint32 entry checksum}
//   [data_offset, ...)   N entries of 57 x G x G fp16 (19 heatmap channels then 38 PAF channels),
//                        data_offset rounded up to 4096
// A slot is marked valid only AFTER its data and checksum are written (release fence), and lookup()
// re-checks the entry checksum, so a run killed at any point (even power loss with pages written out
// of order) never returns a half-written entry: it is a miss and is recomputed.
// The file is sized at creation; a wrong magic/version/header checksum/key/geometry/file size or a
// different image list makes open() rebuild it from scratch (written as <path>.tmp, then renamed) and
// say why in the log. One writer at a time (readers in other processes are fine).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "posekd/data/loader.h"
#include "posekd/data/sample.h"
#include "posekd/model/teacher.h"

namespace posekd::train {

// FNV-1a 64-bit (byte-wise, the standard one).
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ULL);

// Checksum of a module's state dict: names, dtypes, shapes and bytes of every parameter and buffer in
// named_parameters()/named_buffers() order. For the teacher, pass wrapper->net() (the BatchNorm-fused
// copies are kept outside the state dict, so fused and unfused nets give the same checksum).
uint64_t state_dict_checksum(const torch::nn::Module& m);

// Identity of a dataset on disk: FNV over the absolute annotation path, its size and mtime (ns), and
// the absolute image directory. Throws posekd::Error naming the file when it cannot be stat'ed.
uint64_t dataset_identity(const std::string& annotation_path, const std::string& image_dir);

// Everything the cached outputs depend on. Two keys are equal iff every field is.
struct CacheKey {
  uint64_t teacher_checksum = 0;  // state_dict_checksum of the teacher net
  double input_scale = 0.5;       // TeacherOptions::input_scale
  int32_t teacher_input_size = 368;
  int32_t output_size = 16;  // grid G of the stored maps
  int32_t num_refinement_stages = 1;
  int32_t sample_input_size = 128;  // SampleConfig fields that change the image
  int32_t reduced_decode = 1;
  int32_t teacher_precision = 0;  // TeacherOptions::precision: 0 fp32, 1 bf16
  uint64_t dataset_id = 0;        // dataset_identity(...)
  bool operator==(const CacheKey& o) const;
  bool operator!=(const CacheKey& o) const { return !(*this == o); }
  std::string describe() const;  // one line, for logs
};

// The key of a loaded teacher with a sample config and dataset identity.
CacheKey make_cache_key(model::TeacherWrapper& teacher, const data::SampleConfig& sample_config, uint64_t dataset_id);

class TeacherCache {
 public:
  using Log = std::function<void(const std::string&)>;
  // Runs the teacher on images [M,3,S,S] -> {heat [M,19,G,G], paf [M,38,G,G]}.
  using Compute = std::function<std::vector<torch::Tensor>(const torch::Tensor& images)>;

  static constexpr int kHeatChannels = 19;
  static constexpr int kPafChannels = 38;

  struct Stats {
    int64_t hits = 0;           // images served from the cache
    int64_t misses = 0;         // images the teacher computed
    int64_t teacher_calls = 0;  // batched teacher forwards run by fetch_or_compute
  };

  // Opens (or creates / rebuilds) the cache for `image_ids` (duplicates ignored). An existing file
  // is reused only when header, key, geometry, size and image list all match; otherwise it is
  // rebuilt empty and `log` says why. Throws posekd::Error naming the file on I/O failure.
  static TeacherCache open(const std::string& path, const CacheKey& key, const std::vector<int64_t>& image_ids,
                           const Log& log = {});

  TeacherCache(TeacherCache&& o) noexcept;
  TeacherCache& operator=(TeacherCache&& o) noexcept;
  TeacherCache(const TeacherCache&) = delete;
  TeacherCache& operator=(const TeacherCache&) = delete;
  ~TeacherCache();

  bool has_slot(int64_t image_id) const;
  bool contains(int64_t image_id) const;  // has a valid entry (checksum verified)
  // heat [19,G,G] and paf [38,G,G] f32 (fresh tensors). False when absent or invalid.
  bool lookup(int64_t image_id, torch::Tensor& heat, torch::Tensor& paf) const;
  // heat [19,G,G], paf [38,G,G] (any float dtype, stored as fp16). Ignored for an id without a slot
  // (returns false).
  bool store(int64_t image_id, const torch::Tensor& heat, const torch::Tensor& paf);

  // Teacher outputs for a batch: cached images are read, the others computed in ONE batched call of
  // `compute` on the missing images only and stored. Returns {heat [B,19,G,G], paf [B,38,G,G]} f32.
  std::pair<torch::Tensor, torch::Tensor> fetch_or_compute(const std::vector<int64_t>& image_ids,
                                                           const torch::Tensor& images, const Compute& compute);
  std::pair<torch::Tensor, torch::Tensor> fetch_or_compute(const data::Batch& batch, model::TeacherWrapper& teacher);

  void flush();  // msync(MS_SYNC) of the whole mapping

  int64_t num_slots() const { return num_slots_; }
  int64_t valid_count() const;  // entries marked valid (checksums not re-verified)
  int grid() const { return grid_; }
  const std::string& path() const { return path_; }
  const CacheKey& key() const { return key_; }
  bool rebuilt() const { return rebuilt_; }  // open() created a fresh file
  const Stats& stats() const { return stats_; }

 private:
  TeacherCache() = default;
  void unmap();
  int64_t slot_of(int64_t image_id) const;
  uint16_t* entry(int64_t slot) const;
  size_t entry_bytes() const;

  std::string path_;
  CacheKey key_;
  int fd_ = -1;
  uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  int64_t num_slots_ = 0;
  int grid_ = 16;
  size_t data_offset_ = 0;
  bool rebuilt_ = false;
  std::unordered_map<int64_t, int64_t> slot_index_;
  Stats stats_;
};

}  // namespace posekd::train
