#include "posekd/data/coco_json.h"

#include <fmt/format.h>

#include <unistd.h>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "posekd/core/error.h"

namespace posekd::data {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr size_t kMaxWarnings = 20;
constexpr uint32_t kCacheVersion = 2;
constexpr char kCacheMagic[8] = {'P', 'K', 'D', 'C', 'O', 'C', 'O', '\n'};

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, "cannot open file");
  in.seekg(0, std::ios::end);
  std::streamoff n = in.tellg();
  if (n < 0) fail_file(path, "cannot read file");
  std::string buf(static_cast<size_t>(n), '\0');
  in.seekg(0);
  if (n > 0 && !in.read(buf.data(), n)) fail_file(path, "cannot read file");
  return buf;
}

struct AnnotationBuilder {
  CocoDataset ds;
  std::unordered_map<int64_t, size_t> index;  // image id -> position in ds.images
  struct PendingAnn {
    int64_t image_id;
    CocoPerson person;
  };
  std::vector<PendingAnn> anns;
  int64_t keypoints_outside = 0;

  void warn(const std::string& w) {
    ++ds.skipped_annotations;
    if (ds.warnings.size() < kMaxWarnings) ds.warnings.push_back(w);
  }

  static bool get_int(const json& o, const char* key, int64_t& out) {
    auto it = o.find(key);
    if (it == o.end()) return false;
    if (it->is_number_integer()) {
      out = it->get<int64_t>();
      return true;
    }
    if (it->is_number_float()) {
      double d = it->get<double>();
      if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e15) return false;
      out = static_cast<int64_t>(d);
      return true;
    }
    return false;
  }
  static bool get_num(const json& o, const char* key, double& out) {
    auto it = o.find(key);
    if (it == o.end() || !it->is_number()) return false;
    out = it->get<double>();
    return std::isfinite(out);
  }
  static bool num_array(const json& a, float* out, size_t n) {
    if (!a.is_array() || a.size() != n) return false;
    for (size_t i = 0; i < n; ++i) {
      if (!a[i].is_number()) return false;
      double d = a[i].get<double>();
      if (!std::isfinite(d)) return false;
      out[i] = static_cast<float>(d);
    }
    return true;
  }

  void add_image(const json& o, size_t k) {
    if (!o.is_object()) return warn(fmt::format("images[{}]: not an object, skipped", k));
    int64_t id, w, h;
    if (!get_int(o, "id", id)) return warn(fmt::format("images[{}]: missing or non-integer id, skipped", k));
    auto fn = o.find("file_name");
    if (fn == o.end() || !fn->is_string() || fn->get_ref<const std::string&>().empty())
      return warn(fmt::format("image {}: missing or non-string file_name, skipped", id));
    if (!get_int(o, "width", w) || !get_int(o, "height", h) || w <= 0 || h <= 0 || w > 1000000 || h > 1000000)
      return warn(fmt::format("image {}: missing, non-integer or non-positive width/height, skipped", id));
    if (index.count(id)) return warn(fmt::format("image {}: duplicate id, skipped", id));
    CocoImage im;
    im.id = id;
    im.file_name = fn->get<std::string>();
    im.width = static_cast<int>(w);
    im.height = static_cast<int>(h);
    index.emplace(id, ds.images.size());
    ds.images.push_back(std::move(im));
  }

  bool parse_segmentation(const json& s, Segmentation& seg, std::string& why) {
    if (s.is_array()) {
      for (const auto& poly : s) {
        if (!poly.is_array()) {
          why = "polygon is not an array";
          return false;
        }
        std::vector<float> p;
        p.reserve(poly.size());
        for (const auto& v : poly) {
          if (!v.is_number() || !std::isfinite(v.get<double>())) {
            why = "non-numeric polygon coordinate";
            return false;
          }
          p.push_back(static_cast<float>(v.get<double>()));
        }
        if (p.size() >= 6 && p.size() % 2 == 0) seg.polygons.push_back(std::move(p));
      }
      return true;
    }
    if (s.is_object()) {
      auto size = s.find("size");
      auto counts = s.find("counts");
      if (size == s.end() || !size->is_array() || size->size() != 2 || !(*size)[0].is_number_integer() ||
          !(*size)[1].is_number_integer()) {
        why = "RLE without an integer [h, w] size";
        return false;
      }
      int64_t h = (*size)[0].get<int64_t>(), w = (*size)[1].get<int64_t>();
      if (h <= 0 || w <= 0 || h > 1000000 || w > 1000000) {
        why = "RLE with a non-positive size";
        return false;
      }
      seg.rle_h = static_cast<int>(h);
      seg.rle_w = static_cast<int>(w);
      if (counts == s.end()) {
        why = "RLE without counts";
        return false;
      }
      if (counts->is_string()) {
        try {
          seg.rle_counts = decode_rle_string(counts->get<std::string>());
        } catch (const Error& e) {
          why = e.what();
          return false;
        }
      } else if (counts->is_array()) {
        seg.rle_counts.reserve(counts->size());
        for (const auto& v : *counts) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > h * w) {
            why = "RLE count that is not a non-negative integer";
            return false;
          }
          seg.rle_counts.push_back(static_cast<uint32_t>(v.get<int64_t>()));
        }
      } else {
        why = "RLE counts neither a list nor a string";
        return false;
      }
      return true;
    }
    why = "segmentation neither a list nor an object";
    return false;
  }

  void add_annotation(const json& o, size_t k) {
    if (!o.is_object()) return warn(fmt::format("annotations[{}]: not an object, skipped", k));
    int64_t cat = 1;
    if (o.contains("category_id") && (!get_int(o, "category_id", cat))) cat = -1;
    if (cat != 1) return;  // not a person: ignored (not a problem)
    PendingAnn a;
    CocoPerson& p = a.person;
    if (!get_int(o, "id", p.ann_id)) return warn(fmt::format("annotations[{}]: missing or non-integer id, skipped", k));
    if (!get_int(o, "image_id", a.image_id))
      return warn(fmt::format("annotation {}: missing or non-integer image_id, skipped", p.ann_id));
    int64_t crowd = 0;
    if (o.contains("iscrowd") && (!get_int(o, "iscrowd", crowd) || (crowd != 0 && crowd != 1)))
      return warn(fmt::format("annotation {}: iscrowd is not 0/1, skipped", p.ann_id));
    p.iscrowd = crowd == 1;
    auto kp = o.find("keypoints");
    if (kp != o.end()) {
      if (!num_array(*kp, p.keypoints.data(), 51))
        return warn(fmt::format("annotation {}: keypoints is not a list of 51 numbers, skipped", p.ann_id));
      for (int j = 0; j < 17; ++j) {
        float v = p.keypoints[3 * j + 2];
        if (v != 0.f && v != 1.f && v != 2.f)
          return warn(fmt::format("annotation {}: keypoint visibility {} is not 0/1/2, skipped", p.ann_id, v));
      }
    } else if (!p.iscrowd) {
      return warn(fmt::format("annotation {}: person without keypoints, skipped", p.ann_id));
    }
    int64_t nk = 0;
    if (o.contains("num_keypoints") && (!get_int(o, "num_keypoints", nk) || nk < 0 || nk > 17))
      return warn(fmt::format("annotation {}: num_keypoints is not an integer in [0,17], skipped", p.ann_id));
    p.num_keypoints = static_cast<int>(nk);
    auto bb = o.find("bbox");
    if (bb != o.end()) {
      if (!num_array(*bb, p.bbox.data(), 4) || p.bbox[2] < 0 || p.bbox[3] < 0)
        return warn(fmt::format("annotation {}: bbox is not 4 numbers with w, h >= 0, skipped", p.ann_id));
    }
    double area = 0;
    if (o.contains("area") && (!get_num(o, "area", area) || area < 0))
      return warn(fmt::format("annotation {}: area is not a non-negative number, skipped", p.ann_id));
    p.area = static_cast<float>(area);
    auto seg = o.find("segmentation");
    if (p.iscrowd && seg != o.end() && !seg->is_null()) {  // persons' segmentations are not kept
      std::string why;
      if (!parse_segmentation(*seg, p.segmentation, why))
        return warn(fmt::format("annotation {}: crowd segmentation: {}, skipped", p.ann_id, why));
    }
    anns.push_back(std::move(a));
  }

  void finish() {
    for (auto& a : anns) {
      auto it = index.find(a.image_id);
      if (it == index.end()) {
        warn(fmt::format("annotation {}: unknown image id {}, skipped", a.person.ann_id, a.image_id));
        continue;
      }
      CocoImage& im = ds.images[it->second];
      if (a.person.iscrowd) {
        im.crowds.push_back(std::move(a.person));
      } else {
        const auto& k = a.person.keypoints;
        for (int j = 0; j < 17; ++j) {
          float x = k[3 * j], y = k[3 * j + 1];
          if (k[3 * j + 2] > 0 && !(x == 0 && y == 0) && (x < 0 || y < 0 || x >= im.width || y >= im.height))
            ++keypoints_outside;
        }
        im.persons.push_back(std::move(a.person));
      }
    }
    anns.clear();
    if (keypoints_outside > 0)
      ds.warnings.push_back(
          fmt::format("{} labeled keypoints lie outside their image (treated as not labeled)", keypoints_outside));
  }
};

// SAX handler: tracks the top-level keys, builds a small DOM per element of `images` and
// `annotations`, hands it to AnnotationBuilder, and skips everything else.
class Sax {
 public:
  explicit Sax(AnnotationBuilder& l) : loader_(l) {}

  bool null() { return value(json(nullptr)); }
  bool boolean(bool b) { return value(json(b)); }
  bool number_integer(json::number_integer_t v) { return value(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return value(json(v)); }
  bool number_float(json::number_float_t v, const std::string&) { return value(json(v)); }
  bool string(std::string& s) { return value(json(std::move(s))); }
  bool binary(json::binary_t&) { return value(json()); }

  bool key(std::string& k) {
    if (depth_ == 1) top_key_ = k;
    if (!stack_.empty()) pending_key_ = std::move(k);
    return true;
  }
  bool start_object(std::size_t) { return open(json::value_t::object); }
  bool start_array(std::size_t) {
    if (depth_ == 1 && stack_.empty()) {
      section_ = top_key_ == "images" ? 1 : top_key_ == "annotations" ? 2 : 0;
      count_ = 0;
      ++depth_;
      return true;
    }
    return open(json::value_t::array);
  }
  bool end_object() { return close(); }
  bool end_array() {
    if (depth_ == 2 && stack_.empty()) {
      section_ = 0;
      --depth_;
      return true;
    }
    return close();
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    error_pos_ = position;
    error_msg_ = ex.what();
    return false;
  }

  std::size_t error_pos_ = 0;
  std::string error_msg_;

 private:
  bool in_element() const { return section_ != 0 && depth_ >= 2; }

  bool open(json::value_t t) {
    ++depth_;
    if (depth_ == 3 && section_ != 0) {  // a new element
      elem_ = json(t);
      stack_.push_back(&elem_);
      return true;
    }
    if (!stack_.empty()) {
      json* parent = stack_.back();
      json* child;
      if (parent->is_array()) {
        parent->push_back(json(t));
        child = &parent->back();
      } else {
        child = &(*parent)[pending_key_];
        *child = json(t);
      }
      stack_.push_back(child);
    }
    return true;
  }
  bool close() {
    --depth_;
    if (!stack_.empty()) {
      stack_.pop_back();
      if (stack_.empty()) emit();
    }
    return true;
  }
  bool value(json&& v) {
    if (!stack_.empty()) {
      json* parent = stack_.back();
      if (parent->is_array())
        parent->push_back(std::move(v));
      else
        (*parent)[pending_key_] = std::move(v);
    } else if (depth_ == 2 && section_ != 0) {  // scalar element: wrong type
      elem_ = std::move(v);
      emit();
    }
    return true;
  }
  void emit() {
    if (section_ == 1)
      loader_.add_image(elem_, count_);
    else if (section_ == 2)
      loader_.add_annotation(elem_, count_);
    ++count_;
    elem_ = json();
  }

  AnnotationBuilder& loader_;
  int depth_ = 0;
  int section_ = 0;  // 1 images, 2 annotations
  size_t count_ = 0;
  std::string top_key_, pending_key_;
  json elem_;
  std::vector<json*> stack_;
};

CocoDataset parse_coco(const std::string& path) {
  std::string buf = read_file_bytes(path);
  AnnotationBuilder loader;
  Sax sax(loader);
  bool ok = json::sax_parse(buf.data(), buf.data() + buf.size(), &sax);
  if (!ok) {
    size_t pos = std::min(sax.error_pos_ > 0 ? sax.error_pos_ - 1 : 0, buf.size());
    size_t line = 1, last_nl = std::string::npos;
    for (size_t i = 0; i < pos; ++i)
      if (buf[i] == '\n') {
        ++line;
        last_nl = i;
      }
    size_t col = last_nl == std::string::npos ? pos + 1 : pos - last_nl;
    std::string msg = sax.error_msg_;
    auto c = msg.find(": ", msg.find("column"));
    if (c != std::string::npos && msg.find("column") != std::string::npos) msg = msg.substr(c + 2);
    throw Error(fmt::format("{}:{}:{}: malformed JSON: {}", path, line, col, msg));
  }
  loader.finish();
  return std::move(loader.ds);
}

// ---- binary cache ------------------------------------------------------------------------
struct Writer {
  std::string out;
  template <class T>
  void pod(const T& v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    out.append(s);
  }
  template <class T>
  void vec(const std::vector<T>& v) {
    pod<uint64_t>(v.size());
    out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
};
struct BadCache {};
struct Reader {
  const char* p;
  const char* end;
  template <class T>
  T pod() {
    if (static_cast<size_t>(end - p) < sizeof(T)) throw BadCache{};
    T v;
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    return v;
  }
  uint64_t count(size_t elem) {
    uint64_t n = pod<uint64_t>();
    if (elem > 0 && n > static_cast<uint64_t>(end - p) / elem) throw BadCache{};
    return n;
  }
  std::string str() {
    uint64_t n = count(1);
    std::string s(p, n);
    p += n;
    return s;
  }
  template <class T>
  std::vector<T> vec() {
    uint64_t n = count(sizeof(T));
    std::vector<T> v(n);
    if (n) std::memcpy(v.data(), p, n * sizeof(T));  // an empty vector's data() may be null (UBSan)
    p += n * sizeof(T);
    return v;
  }
};

void write_person(Writer& w, const CocoPerson& p) {
  w.pod(p.ann_id);
  w.pod(p.keypoints);
  w.pod(p.bbox);
  w.pod(p.area);
  w.pod<int32_t>(p.num_keypoints);
  w.pod<uint8_t>(p.iscrowd);
  w.pod<uint64_t>(p.segmentation.polygons.size());
  for (const auto& poly : p.segmentation.polygons) w.vec(poly);
  w.vec(p.segmentation.rle_counts);
  w.pod<int32_t>(p.segmentation.rle_h);
  w.pod<int32_t>(p.segmentation.rle_w);
}
CocoPerson read_person(Reader& r) {
  CocoPerson p;
  p.ann_id = r.pod<int64_t>();
  p.keypoints = r.pod<std::array<float, 51>>();
  p.bbox = r.pod<std::array<float, 4>>();
  p.area = r.pod<float>();
  p.num_keypoints = r.pod<int32_t>();
  p.iscrowd = r.pod<uint8_t>() != 0;
  uint64_t np = r.count(8);
  p.segmentation.polygons.resize(np);
  for (auto& poly : p.segmentation.polygons) poly = r.vec<float>();
  p.segmentation.rle_counts = r.vec<uint32_t>();
  p.segmentation.rle_h = r.pod<int32_t>();
  p.segmentation.rle_w = r.pod<int32_t>();
  return p;
}

struct SourceKey {
  uint64_t size;
  int64_t mtime;
};
SourceKey source_key(const std::string& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) fail_file(path, "cannot open file");
  auto t = fs::last_write_time(path, ec);
  if (ec) fail_file(path, "cannot open file");
  return {static_cast<uint64_t>(size),
          static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count())};
}

std::string header(const SourceKey& k) {
  Writer w;
  w.out.append(kCacheMagic, sizeof(kCacheMagic));
  w.pod(kCacheVersion);
  w.pod(k.size);
  w.pod(k.mtime);
  return w.out;
}

bool read_cache(const std::string& cache, const SourceKey& key, CocoDataset& ds) {
  std::error_code ec;
  if (!fs::exists(cache, ec)) return false;
  std::string buf;
  try {
    buf = read_file_bytes(cache);
  } catch (const Error&) {
    return false;
  }
  std::string h = header(key);
  if (buf.size() < h.size() || buf.compare(0, h.size(), h) != 0) return false;
  Reader r{buf.data() + h.size(), buf.data() + buf.size()};
  try {
    CocoDataset d;
    d.skipped_annotations = r.pod<int64_t>();
    uint64_t nw = r.count(8);
    for (uint64_t i = 0; i < nw; ++i) d.warnings.push_back(r.str());
    uint64_t ni = r.count(8);
    d.images.resize(ni);
    for (auto& im : d.images) {
      im.id = r.pod<int64_t>();
      im.file_name = r.str();
      im.width = r.pod<int32_t>();
      im.height = r.pod<int32_t>();
      uint64_t np = r.count(8);
      im.persons.reserve(np);
      for (uint64_t i = 0; i < np; ++i) im.persons.push_back(read_person(r));
      uint64_t nc = r.count(8);
      for (uint64_t i = 0; i < nc; ++i) im.crowds.push_back(read_person(r));
    }
    if (r.p != r.end) return false;
    ds = std::move(d);
    return true;
  } catch (const BadCache&) {
    return false;
  }
}

void write_cache(const std::string& cache, const SourceKey& key, const CocoDataset& ds) {
  Writer w;
  w.out = header(key);
  w.pod(ds.skipped_annotations);
  w.pod<uint64_t>(ds.warnings.size());
  for (const auto& s : ds.warnings) w.str(s);
  w.pod<uint64_t>(ds.images.size());
  for (const auto& im : ds.images) {
    w.pod(im.id);
    w.str(im.file_name);
    w.pod<int32_t>(im.width);
    w.pod<int32_t>(im.height);
    w.pod<uint64_t>(im.persons.size());
    for (const auto& p : im.persons) write_person(w, p);
    w.pod<uint64_t>(im.crowds.size());
    for (const auto& p : im.crowds) write_person(w, p);
  }
  std::error_code ec;
  fs::create_directories(fs::path(cache).parent_path(), ec);
  std::string tmp = cache + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail_file(cache, "cannot write the annotation cache");
    out.write(w.out.data(), static_cast<std::streamsize>(w.out.size()));
    if (!out) {
      out.close();
      fs::remove(tmp, ec);
      fail_file(cache, "cannot write the annotation cache");
    }
  }
  fs::rename(tmp, cache, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fail_file(cache, "cannot write the annotation cache");
  }
}

}  // namespace

std::vector<uint32_t> decode_rle_string(const std::string& s, const std::string& what) {
  std::vector<int64_t> cnts;
  size_t p = 0;
  while (p < s.size()) {
    // Bits are assembled unsigned: shifting a negative or overflowing signed value is undefined
    // behaviour in C++17 (UBSan found the sign extension in `make asan`).
    uint64_t ux = 0;
    int k = 0;
    bool more = true;
    while (more) {
      if (p >= s.size()) throw Error(what + ": truncated compressed RLE string");
      int c = static_cast<unsigned char>(s[p]) - 48;
      if (c < 0 || c > 63 || k > 12) throw Error(what + ": invalid compressed RLE string");
      ux |= static_cast<uint64_t>(c & 0x1f) << (5 * k);
      more = c & 0x20;
      ++p;
      ++k;
      if (!more && (c & 0x10) && 5 * k < 64) ux |= ~uint64_t(0) << (5 * k);  // sign extension
    }
    int64_t x = static_cast<int64_t>(ux);
    if (cnts.size() > 2) x += cnts[cnts.size() - 2];
    if (x < 0 || x > 0xffffffffLL) throw Error(what + ": invalid run length in compressed RLE string");
    cnts.push_back(x);
  }
  return std::vector<uint32_t>(cnts.begin(), cnts.end());
}

bool has_keypoint_person(const CocoImage& image) {
  for (const auto& p : image.persons)
    if (p.num_keypoints > 0) return true;
  return false;
}

std::string coco_cache_path(const std::string& ann_json, const std::string& cache_dir) {
  return (fs::path(cache_dir) / (fs::path(ann_json).stem().string() + ".posekd-coco")).string();
}

CocoDataset load_coco(const std::string& ann_json, const std::string& image_dir, const CocoLoadOptions& options) {
  SourceKey key = source_key(ann_json);
  CocoDataset ds;
  bool cached = false;
  std::string cache;
  if (options.use_cache && !options.cache_dir.empty()) {
    cache = coco_cache_path(ann_json, options.cache_dir);
    cached = read_cache(cache, key, ds);
  }
  if (!cached) {
    ds = parse_coco(ann_json);
    if (!cache.empty()) write_cache(cache, key, ds);
  }
  ds.annotation_path = ann_json;
  ds.image_dir = image_dir;
  if (options.subset > 0) {
    std::vector<CocoImage> kept;
    for (auto& im : ds.images) {
      if (static_cast<int64_t>(kept.size()) >= options.subset) break;
      if (has_keypoint_person(im)) kept.push_back(std::move(im));
    }
    ds.images = std::move(kept);
  }
  return ds;
}

}  // namespace posekd::data
