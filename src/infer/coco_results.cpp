#include "posekd/infer/coco_results.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <set>

#include "posekd/core/error.h"

namespace posekd::infer {

using nlohmann::json;

std::vector<Detection> poses_to_detections(int64_t image_id, const std::vector<Pose>& poses) {
  std::vector<Detection> out;
  out.reserve(poses.size());
  for (const auto& p : poses) out.push_back({image_id, p.keypoints, p.score});
  return out;
}

void write_results_json(const std::string& path, const std::vector<Detection>& dts) {
  json arr = json::array();
  for (const auto& d : dts) {
    json kp = json::array();
    for (float v : d.keypoints) kp.push_back(v);
    arr.push_back({{"image_id", d.image_id}, {"category_id", 1}, {"keypoints", std::move(kp)}, {"score", d.score}});
  }
  std::ofstream f(path);
  if (!f) fail_file(path, "cannot open for writing");
  f << arr.dump() << '\n';
  if (!f) fail_file(path, "write failed");
}

namespace {

json parse_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail_file(path, "cannot open");
  try {
    return json::parse(f);
  } catch (const json::parse_error& e) {
    // e.what() names the line and column ("parse error at line L, column C: ...").
    fail_file(path, std::string("invalid JSON: ") + e.what());
  }
}

double num(const std::string& path, const json& obj, const char* key, const std::string& where, bool required = true,
           double fallback = 0) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) fail_file(path, where + ": missing '" + key + "'");
    return fallback;
  }
  if (it->is_boolean()) return it->get<bool>() ? 1 : 0;
  if (!it->is_number()) fail_file(path, where + ": '" + key + "' is not a number");
  return it->get<double>();
}

int64_t id(const std::string& path, const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it != obj.end() && it->is_number_integer()) return it->get<int64_t>();
  return static_cast<int64_t>(num(path, obj, key, where));
}

template <size_t N>
void num_array(const std::string& path, const json& obj, const char* key, const std::string& where,
               std::array<float, N>& out) {
  auto it = obj.find(key);
  if (it == obj.end()) fail_file(path, where + ": missing '" + key + "'");
  if (!it->is_array() || it->size() != N)
    fail_file(path, where + ": '" + key + "' must be an array of " + std::to_string(N) + " numbers");
  for (size_t i = 0; i < N; ++i) {
    if (!(*it)[i].is_number()) fail_file(path, where + ": '" + key + "'[" + std::to_string(i) + "] is not a number");
    out[i] = (*it)[i].get<float>();
  }
}

}  // namespace

std::vector<Detection> read_results_json(const std::string& path, int64_t* dropped) {
  const json j = parse_file(path);
  if (!j.is_array()) fail_file(path, "results must be a JSON array of {image_id, category_id, keypoints, score}");
  std::vector<Detection> out;
  int64_t drop = 0;
  for (size_t i = 0; i < j.size(); ++i) {
    const json& r = j[i];
    const std::string where = "result " + std::to_string(i);
    if (!r.is_object()) fail_file(path, where + " is not an object");
    const double cat = num(path, r, "category_id", where, false, 1);
    Detection d;
    d.image_id = id(path, r, "image_id", where);
    num_array(path, r, "keypoints", where, d.keypoints);
    d.score = static_cast<float>(num(path, r, "score", where));
    if (cat != 1) {
      ++drop;
      continue;
    }
    out.push_back(d);
  }
  if (dropped) *dropped = drop;
  return out;
}

data::CocoDataset read_coco_gt_for_eval(const std::string& path) {
  const json j = parse_file(path);
  if (!j.is_object()) fail_file(path, "not a COCO annotation object");
  auto images = j.find("images");
  auto anns = j.find("annotations");
  if (images == j.end() || !images->is_array()) fail_file(path, "missing 'images' array");
  if (anns == j.end() || !anns->is_array()) fail_file(path, "missing 'annotations' array");
  data::CocoDataset ds;
  ds.annotation_path = path;
  std::map<int64_t, size_t> index;
  for (size_t i = 0; i < images->size(); ++i) {
    const json& im = (*images)[i];
    const std::string where = "images[" + std::to_string(i) + "]";
    if (!im.is_object()) fail_file(path, where + " is not an object");
    data::CocoImage ci;
    ci.id = id(path, im, "id", where);
    if (auto f = im.find("file_name"); f != im.end() && f->is_string()) ci.file_name = f->get<std::string>();
    ci.width = static_cast<int>(num(path, im, "width", where, false, 0));
    ci.height = static_cast<int>(num(path, im, "height", where, false, 0));
    if (!index.emplace(ci.id, ds.images.size()).second)
      fail_file(path, where + ": duplicate image id " + std::to_string(ci.id));
    ds.images.push_back(std::move(ci));
  }
  for (size_t i = 0; i < anns->size(); ++i) {
    const json& a = (*anns)[i];
    const std::string where = "annotations[" + std::to_string(i) + "]";
    if (!a.is_object()) fail_file(path, where + " is not an object");
    if (num(path, a, "category_id", where, false, 1) != 1) continue;
    data::CocoPerson p;
    p.ann_id = id(path, a, "id", where);
    const auto image_id = id(path, a, "image_id", where);
    p.iscrowd = num(path, a, "iscrowd", where, false, 0) != 0;
    if (a.contains("keypoints")) num_array(path, a, "keypoints", where, p.keypoints);
    num_array(path, a, "bbox", where, p.bbox);
    p.area = static_cast<float>(num(path, a, "area", where));
    int labeled = 0;
    for (int k = 0; k < 17; ++k) labeled += p.keypoints[3 * k + 2] > 0 ? 1 : 0;
    p.num_keypoints = static_cast<int>(num(path, a, "num_keypoints", where, false, labeled));
    auto it = index.find(image_id);
    if (it == index.end()) {
      ++ds.skipped_annotations;
      if (ds.warnings.size() < 5)
        ds.warnings.push_back(where + ": image_id " + std::to_string(image_id) + " is not in 'images'");
      continue;
    }
    auto& img = ds.images[it->second];
    (p.iscrowd ? img.crowds : img.persons).push_back(std::move(p));
  }
  return ds;
}

}  // namespace posekd::infer
