#include "posekd/train/teacher_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "posekd/core/error.h"

namespace posekd::train {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'P', 'O', 'S', 'E', 'K', 'D', 'T', 'C'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kPage = 4096;
constexpr int kChannels = TeacherCache::kHeatChannels + TeacherCache::kPafChannels;

struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  int64_t num_slots;
  int32_t grid;
  int32_t channels;
  uint64_t data_offset;
  uint64_t file_size;
  uint64_t teacher_checksum;
  double input_scale;
  int32_t teacher_input_size;
  int32_t output_size;
  int32_t num_refinement_stages;
  int32_t sample_input_size;
  int32_t reduced_decode;
  int32_t teacher_precision;  // 0 fp32, 1 bf16 (was padding, zero, in files written before bf16)
  uint64_t dataset_id;
  uint64_t ids_hash;
  uint64_t header_checksum;  // fnv1a64 of the bytes before this field
};
static_assert(sizeof(FileHeader) <= kHeaderBytes, "header too large");

struct Slot {
  int64_t image_id;
  uint32_t valid;
  uint32_t checksum;
};
static_assert(sizeof(Slot) == 16, "slot layout");

uint64_t header_checksum(const FileHeader& h) { return fnv1a64(&h, offsetof(FileHeader, header_checksum)); }

// Word-wise FNV-style hash of an entry (fast enough to verify on every lookup), folded to 32 bits.
uint32_t entry_checksum(const uint16_t* data, size_t bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const size_t words = bytes / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, reinterpret_cast<const uint8_t*>(data) + 8 * i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  return static_cast<uint32_t>(h ^ (h >> 32));
}

std::string shape_str(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "," : "") + std::to_string(t.size(i));
  return s + "]";
}

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

uint64_t ids_hash(const std::vector<int64_t>& ids) { return fnv1a64(ids.data(), ids.size() * sizeof(int64_t)); }

void fill_key(FileHeader& h, const CacheKey& k) {
  h.teacher_checksum = k.teacher_checksum;
  h.input_scale = k.input_scale;
  h.teacher_input_size = k.teacher_input_size;
  h.output_size = k.output_size;
  h.num_refinement_stages = k.num_refinement_stages;
  h.sample_input_size = k.sample_input_size;
  h.reduced_decode = k.reduced_decode;
  h.teacher_precision = k.teacher_precision;
  h.dataset_id = k.dataset_id;
}

CacheKey key_of(const FileHeader& h) {
  CacheKey k;
  k.teacher_checksum = h.teacher_checksum;
  k.input_scale = h.input_scale;
  k.teacher_input_size = h.teacher_input_size;
  k.output_size = h.output_size;
  k.num_refinement_stages = h.num_refinement_stages;
  k.sample_input_size = h.sample_input_size;
  k.reduced_decode = h.reduced_decode;
  k.teacher_precision = h.teacher_precision;
  k.dataset_id = h.dataset_id;
  return k;
}

// The first differing key field, for the log ("" when equal).
std::string key_difference(const CacheKey& file, const CacheKey& want) {
  if (file.teacher_checksum != want.teacher_checksum)
    return fmt::format("teacher weights checksum {:016x}, this run's teacher {:016x}", file.teacher_checksum,
                       want.teacher_checksum);
  if (file.input_scale != want.input_scale)
    return fmt::format("teacher input scale {}, this run {}", file.input_scale, want.input_scale);
  if (file.teacher_input_size != want.teacher_input_size)
    return fmt::format("teacher input size {}, this run {}", file.teacher_input_size, want.teacher_input_size);
  if (file.output_size != want.output_size)
    return fmt::format("output size {}, this run {}", file.output_size, want.output_size);
  if (file.num_refinement_stages != want.num_refinement_stages)
    return fmt::format("{} refinement stages, this run {}", file.num_refinement_stages, want.num_refinement_stages);
  if (file.sample_input_size != want.sample_input_size)
    return fmt::format("sample input size {}, this run {}", file.sample_input_size, want.sample_input_size);
  if (file.reduced_decode != want.reduced_decode)
    return fmt::format("reduced_decode {}, this run {}", file.reduced_decode, want.reduced_decode);
  if (file.teacher_precision != want.teacher_precision)
    return fmt::format("teacher computed in {}, this run's teacher in {}", file.teacher_precision ? "bf16" : "fp32",
                       want.teacher_precision ? "bf16" : "fp32");
  if (file.dataset_id != want.dataset_id)
    return fmt::format("dataset identity {:016x}, this run {:016x} (annotation file or image folder changed)",
                       file.dataset_id, want.dataset_id);
  return "";
}

[[noreturn]] void fail_errno(const std::string& path, const std::string& what) {
  fail_file(path, fmt::format("{}: {}", what, std::strerror(errno)));
}

void pwrite_all(int fd, const void* buf, size_t n, off_t off, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_errno(path, "cannot write the teacher cache");
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += w;
  }
}

// Writes an empty cache (all slots invalid) as path.tmp, then renames it over path.
void create_file(const std::string& path, const CacheKey& key, const std::vector<int64_t>& ids) {
  const std::string tmp = path + ".tmp";
  const size_t entry_bytes = static_cast<size_t>(kChannels) * key.output_size * key.output_size * 2;
  const size_t table_bytes = ids.size() * sizeof(Slot);
  const size_t data_offset = round_up(kHeaderBytes + table_bytes, kPage);
  const size_t file_size = data_offset + ids.size() * entry_bytes;

  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno(tmp, "cannot create the teacher cache");
  try {
    if (::ftruncate(fd, static_cast<off_t>(file_size)) != 0) fail_errno(tmp, "cannot size the teacher cache");
    std::vector<Slot> table(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) table[i] = Slot{ids[i], 0u, 0u};
    if (table_bytes) pwrite_all(fd, table.data(), table_bytes, kHeaderBytes, tmp);
    std::vector<uint8_t> hbuf(kHeaderBytes, 0);
    FileHeader h{};
    std::memcpy(h.magic, kMagic, 8);
    h.version = kVersion;
    h.header_bytes = kHeaderBytes;
    h.num_slots = static_cast<int64_t>(ids.size());
    h.grid = key.output_size;
    h.channels = kChannels;
    h.data_offset = data_offset;
    h.file_size = file_size;
    fill_key(h, key);
    h.ids_hash = ids_hash(ids);
    h.header_checksum = header_checksum(h);
    std::memcpy(hbuf.data(), &h, sizeof(h));
    // Table first, header last: a file whose header is valid has its slot table.
    pwrite_all(fd, hbuf.data(), hbuf.size(), 0, tmp);
    if (::fsync(fd) != 0) fail_errno(tmp, "cannot sync the teacher cache");
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  fs::rename(tmp, path, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    fail_file(path, "cannot rename the new teacher cache into place: " + ec.message());
  }
}

// Why an existing file cannot be used ("" = usable). Fills `h` when the header is readable.
std::string check_file(const std::string& path, const CacheKey& key, FileHeader& h) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? "no cache file yet" : fmt::format("cannot open it ({})", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return "cannot stat it";
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < sizeof(FileHeader)) {
    ::close(fd);
    return fmt::format("truncated: {} bytes, smaller than the header", size);
  }
  ssize_t r = ::pread(fd, &h, sizeof(h), 0);
  ::close(fd);
  if (r != static_cast<ssize_t>(sizeof(h))) return "cannot read the header";
  if (std::memcmp(h.magic, kMagic, 8) != 0) return "not a posekd teacher cache (bad magic)";
  if (h.version != kVersion) return fmt::format("format version {}, expected {}", h.version, kVersion);
  if (h.header_checksum != header_checksum(h)) return "corrupt header (checksum mismatch)";
  if (h.channels != kChannels || h.grid <= 0 || h.num_slots < 0 || h.header_bytes != kHeaderBytes)
    return "corrupt header (bad geometry)";
  const size_t entry_bytes = static_cast<size_t>(h.channels) * h.grid * h.grid * 2;
  const size_t want_offset = round_up(kHeaderBytes + static_cast<size_t>(h.num_slots) * sizeof(Slot), kPage);
  if (h.data_offset != want_offset || h.file_size != want_offset + static_cast<size_t>(h.num_slots) * entry_bytes)
    return "corrupt header (bad layout)";
  if (size != h.file_size) return fmt::format("truncated or resized: {} bytes, the header says {}", size, h.file_size);
  std::string diff = key_difference(key_of(h), key);
  if (!diff.empty()) return "stale: " + diff;
  return "";
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t state_dict_checksum(const torch::nn::Module& m) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    h = fnv1a64(name.data(), name.size(), h);
    const auto dtype = static_cast<int>(t.scalar_type());
    h = fnv1a64(&dtype, sizeof(dtype), h);
    for (int64_t s : t.sizes()) h = fnv1a64(&s, sizeof(s), h);
    if (!t.defined() || t.numel() == 0) return;
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    h = fnv1a64(c.data_ptr(), c.numel() * c.element_size(), h);
  };
  for (const auto& p : m.named_parameters(true)) add("p:" + p.key(), p.value());
  for (const auto& b : m.named_buffers(true)) add("b:" + b.key(), b.value());
  return h;
}

uint64_t dataset_identity(const std::string& annotation_path, const std::string& image_dir) {
  struct stat st {};
  if (::stat(annotation_path.c_str(), &st) != 0) fail_errno(annotation_path, "cannot stat the annotation file");
  std::error_code ec;
  const std::string ann = fs::absolute(annotation_path, ec).lexically_normal().string();
  const std::string dir = fs::absolute(image_dir, ec).lexically_normal().string();
  uint64_t h = fnv1a64(ann.data(), ann.size());
  const int64_t size = st.st_size;
  const int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  h = fnv1a64(&size, sizeof(size), h);
  h = fnv1a64(&mtime_ns, sizeof(mtime_ns), h);
  h = fnv1a64("|", 1, h);
  return fnv1a64(dir.data(), dir.size(), h);
}

bool CacheKey::operator==(const CacheKey& o) const { return key_difference(*this, o).empty(); }

std::string CacheKey::describe() const {
  return fmt::format(
      "teacher {:016x}, input scale {}, teacher input {}, {} refinement stage(s), output {}x{}, "
      "sample input {}, reduced_decode {}, {}, dataset {:016x}",
      teacher_checksum, input_scale, teacher_input_size, num_refinement_stages, output_size, output_size,
      sample_input_size, reduced_decode, teacher_precision ? "bf16" : "fp32", dataset_id);
}

CacheKey make_cache_key(model::TeacherWrapper& teacher, const data::SampleConfig& sc, uint64_t dataset_id) {
  CacheKey k;
  k.teacher_checksum = state_dict_checksum(*teacher->net());
  const auto& o = teacher->options();
  k.input_scale = o.input_scale;
  k.teacher_input_size = o.input_size;
  k.output_size = o.output_size;
  k.num_refinement_stages = teacher->net()->num_refinement_stages();
  k.sample_input_size = sc.input_size;
  k.reduced_decode = sc.reduced_decode ? 1 : 0;
  k.teacher_precision = o.precision == Precision::bf16 ? 1 : 0;
  k.dataset_id = dataset_id;
  return k;
}

// ------------------------------------------------------------------------------------------------

TeacherCache TeacherCache::open(const std::string& path, const CacheKey& key, const std::vector<int64_t>& image_ids,
                                const Log& log) {
  if (key.output_size <= 0) throw Error(fmt::format("{}: teacher cache output size must be positive", path));
  std::vector<int64_t> ids = image_ids;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  auto say = [&](const std::string& s) {
    if (log) log(s);
  };

  FileHeader h{};
  std::string why = check_file(path, key, h);
  bool rebuilt = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!why.empty()) {
      say(fmt::format("Teacher cache {}: {}; building a new empty cache for {} images", path, why, ids.size()));
      create_file(path, key, ids);
      rebuilt = true;
      why = check_file(path, key, h);
      if (!why.empty()) fail_file(path, "the teacher cache just written does not verify: " + why);
    }
    TeacherCache c;
    c.path_ = path;
    c.key_ = key;
    c.grid_ = h.grid;
    c.num_slots_ = h.num_slots;
    c.data_offset_ = h.data_offset;
    c.rebuilt_ = rebuilt;
    c.fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (c.fd_ < 0) fail_errno(path, "cannot open the teacher cache for writing");
    c.map_size_ = h.file_size;
    void* m = ::mmap(nullptr, c.map_size_, PROT_READ | PROT_WRITE, MAP_SHARED, c.fd_, 0);
    if (m == MAP_FAILED) fail_errno(path, "cannot mmap the teacher cache");
    c.map_ = static_cast<uint8_t*>(m);
    const auto* table = reinterpret_cast<const Slot*>(c.map_ + kHeaderBytes);
    c.slot_index_.reserve(static_cast<size_t>(c.num_slots_));
    bool table_ok = true;
    for (int64_t i = 0; i < c.num_slots_; ++i) {
      if (!c.slot_index_.emplace(table[i].image_id, i).second) table_ok = false;
    }
    std::vector<int64_t> file_ids;
    file_ids.reserve(static_cast<size_t>(c.num_slots_));
    for (int64_t i = 0; i < c.num_slots_; ++i) file_ids.push_back(table[i].image_id);
    if (!table_ok || ids_hash(file_ids) != h.ids_hash) {
      why = "corrupt slot table";
    } else {
      int64_t absent = 0;
      for (int64_t id : ids) absent += c.slot_index_.count(id) ? 0 : 1;
      if (absent == 0) {
        if (!rebuilt) {
          say(fmt::format("Teacher cache {}: reusing {} of {} entries ({} slots; {})", path, c.valid_count(),
                          c.num_slots_, c.num_slots_, key.describe()));
        }
        return c;
      }
      why = fmt::format("built for another image list ({} of this run's {} images have no slot)", absent, ids.size());
    }
    if (rebuilt) fail_file(path, "the teacher cache just written does not verify: " + why);
  }
  fail_file(path, "cannot build the teacher cache");
}

TeacherCache::TeacherCache(TeacherCache&& o) noexcept { *this = std::move(o); }

TeacherCache& TeacherCache::operator=(TeacherCache&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    key_ = o.key_;
    fd_ = o.fd_;
    map_ = o.map_;
    map_size_ = o.map_size_;
    num_slots_ = o.num_slots_;
    grid_ = o.grid_;
    data_offset_ = o.data_offset_;
    rebuilt_ = o.rebuilt_;
    slot_index_ = std::move(o.slot_index_);
    stats_ = o.stats_;
    o.fd_ = -1;
    o.map_ = nullptr;
    o.map_size_ = 0;
    o.num_slots_ = 0;
  }
  return *this;
}

TeacherCache::~TeacherCache() { unmap(); }

void TeacherCache::unmap() {
  if (map_) ::munmap(map_, map_size_);
  if (fd_ >= 0) ::close(fd_);
  map_ = nullptr;
  fd_ = -1;
}

size_t TeacherCache::entry_bytes() const { return static_cast<size_t>(kChannels) * grid_ * grid_ * 2; }

int64_t TeacherCache::slot_of(int64_t image_id) const {
  auto it = slot_index_.find(image_id);
  return it == slot_index_.end() ? -1 : it->second;
}

uint16_t* TeacherCache::entry(int64_t slot) const {
  return reinterpret_cast<uint16_t*>(map_ + data_offset_ + static_cast<size_t>(slot) * entry_bytes());
}

bool TeacherCache::has_slot(int64_t image_id) const { return slot_of(image_id) >= 0; }

int64_t TeacherCache::valid_count() const {
  if (!map_) return 0;
  auto* table = reinterpret_cast<Slot*>(map_ + kHeaderBytes);
  int64_t n = 0;
  for (int64_t i = 0; i < num_slots_; ++i) n += __atomic_load_n(&table[i].valid, __ATOMIC_ACQUIRE) == 1u;
  return n;
}

bool TeacherCache::contains(int64_t image_id) const {
  const int64_t s = slot_of(image_id);
  if (s < 0) return false;
  auto* slot = reinterpret_cast<Slot*>(map_ + kHeaderBytes) + s;
  if (__atomic_load_n(&slot->valid, __ATOMIC_ACQUIRE) != 1u) return false;
  return entry_checksum(entry(s), entry_bytes()) == slot->checksum;
}

bool TeacherCache::lookup(int64_t image_id, torch::Tensor& heat, torch::Tensor& paf) const {
  if (!contains(image_id)) return false;
  const int64_t s = slot_of(image_id);
  auto all = torch::from_blob(entry(s), {kChannels, grid_, grid_}, torch::kHalf).to(torch::kFloat32);
  heat = all.slice(0, 0, kHeatChannels);
  paf = all.slice(0, kHeatChannels, kChannels);
  return true;
}

bool TeacherCache::store(int64_t image_id, const torch::Tensor& heat, const torch::Tensor& paf) {
  const int64_t s = slot_of(image_id);
  if (s < 0) return false;
  const std::vector<int64_t> hs{kHeatChannels, grid_, grid_}, ps{kPafChannels, grid_, grid_};
  if (heat.sizes() != c10::IntArrayRef(hs) || paf.sizes() != c10::IntArrayRef(ps))
    throw Error(fmt::format("{}: teacher cache store: expected heat {}x{}x{} and paf {}x{}x{}, got {} and {}", path_,
                            kHeatChannels, grid_, grid_, kPafChannels, grid_, grid_, shape_str(heat), shape_str(paf)));
  auto* slot = reinterpret_cast<Slot*>(map_ + kHeaderBytes) + s;
  // Invalidate, write the data, then publish (valid after data + checksum; release ordering).
  __atomic_store_n(&slot->valid, 0u, __ATOMIC_RELEASE);
  auto half = torch::cat({heat.detach().to(torch::kCPU).reshape({kHeatChannels, -1}),
                          paf.detach().to(torch::kCPU).reshape({kPafChannels, -1})})
                  .to(torch::kHalf)
                  .contiguous();
  std::memcpy(entry(s), half.data_ptr(), entry_bytes());
  slot->checksum = entry_checksum(entry(s), entry_bytes());
  __atomic_store_n(&slot->valid, 1u, __ATOMIC_RELEASE);
  return true;
}

std::pair<torch::Tensor, torch::Tensor> TeacherCache::fetch_or_compute(const std::vector<int64_t>& image_ids,
                                                                       const torch::Tensor& images,
                                                                       const Compute& compute) {
  const int64_t B = static_cast<int64_t>(image_ids.size());
  if (!images.defined() || images.dim() != 4 || images.size(0) != B)
    throw Error(fmt::format("{}: teacher cache: the batch has {} image ids but images of shape {}", path_, B,
                            shape_str(images)));
  auto heat = torch::empty({B, kHeatChannels, grid_, grid_});
  auto paf = torch::empty({B, kPafChannels, grid_, grid_});
  std::vector<int64_t> miss;
  for (int64_t i = 0; i < B; ++i) {
    torch::Tensor h, p;
    if (lookup(image_ids[static_cast<size_t>(i)], h, p)) {
      heat[i].copy_(h);
      paf[i].copy_(p);
      ++stats_.hits;
    } else {
      miss.push_back(i);
    }
  }
  if (!miss.empty()) {
    auto idx = torch::tensor(miss, torch::kLong);
    torch::Tensor sub = miss.size() == static_cast<size_t>(B) ? images : images.index_select(0, idx);
    std::vector<torch::Tensor> out;
    {
      torch::NoGradGuard ng;
      out = compute(sub);
    }
    ++stats_.teacher_calls;
    if (out.size() < 2 || out[0].size(0) != static_cast<int64_t>(miss.size()) ||
        out[1].size(0) != static_cast<int64_t>(miss.size()))
      throw Error(fmt::format("{}: teacher cache: the teacher returned outputs of the wrong shape", path_));
    auto th = out[0].to(torch::kFloat32), tp = out[1].to(torch::kFloat32);
    for (size_t j = 0; j < miss.size(); ++j) {
      const int64_t i = miss[j];
      const int64_t id = image_ids[static_cast<size_t>(i)];
      store(id, th[static_cast<int64_t>(j)], tp[static_cast<int64_t>(j)]);
      // Serve what is stored (fp16-rounded) so a step gives the same result warm or cold.
      torch::Tensor h, p;
      if (lookup(id, h, p)) {
        heat[i].copy_(h);
        paf[i].copy_(p);
      } else {
        heat[i].copy_(th[static_cast<int64_t>(j)]);
        paf[i].copy_(tp[static_cast<int64_t>(j)]);
      }
    }
    stats_.misses += static_cast<int64_t>(miss.size());
  }
  return {heat, paf};
}

std::pair<torch::Tensor, torch::Tensor> TeacherCache::fetch_or_compute(const data::Batch& batch,
                                                                       model::TeacherWrapper& teacher) {
  return fetch_or_compute(batch.image_ids, batch.image, [&](const torch::Tensor& x) { return teacher->forward(x); });
}

void TeacherCache::flush() {
  if (map_ && ::msync(map_, map_size_, MS_SYNC) != 0) fail_errno(path_, "cannot msync the teacher cache");
}

}  // namespace posekd::train
