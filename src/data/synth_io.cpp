// Synthetic people: writing the COCO folder and the contact sheet.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"
#include "posekd/data/coco.h"
#include "posekd/data/synth.h"

namespace posekd::data {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// The COCO file-format `skeleton` of the person category (1-based COCO-17 indices), written for
// compatibility with COCO tools; posekd itself uses the OpenPose limbs of core/skeleton.h.
const int kCocoFileSkeleton[19][2] = {{16, 14}, {14, 12}, {17, 15}, {15, 13}, {12, 13}, {6, 12}, {7, 13},
                                      {6, 7},   {6, 8},   {7, 9},   {8, 10},  {9, 11},  {2, 3},  {1, 2},
                                      {1, 3},   {2, 4},   {3, 5},   {4, 6},   {5, 7}};

ojson categories_json() {
  ojson names = ojson::array();
  for (const auto& n : skeleton::kCocoNames) names.push_back(std::string(n));
  ojson sk = ojson::array();
  for (const auto& l : kCocoFileSkeleton) sk.push_back({l[0], l[1]});
  return ojson::array(
      {{{"supercategory", "person"}, {"id", 1}, {"name", "person"}, {"keypoints", names}, {"skeleton", sk}}});
}

// Two decimals, printed short (12.35, not the float's 12.350000381469727).
// Whole numbers are written as integers (0, not 0.0), as COCO files do.
ojson r2(float v) {
  const double r = std::round(double(v) * 100.0) / 100.0;
  if (r == std::floor(r) && std::fabs(r) < 1e15) return ojson(int64_t(r));
  return ojson(r);
}

ojson floats_json(const float* v, size_t n) {
  ojson a = ojson::array();
  for (size_t i = 0; i < n; ++i) a.push_back(r2(v[i]));
  return a;
}

ojson annotation_json(const CocoPerson& p, int64_t id, int64_t image_id) {
  ojson kp = ojson::array();
  for (int k = 0; k < 17; ++k) {
    kp.push_back(r2(p.keypoints[3 * k]));
    kp.push_back(r2(p.keypoints[3 * k + 1]));
    kp.push_back(int(p.keypoints[3 * k + 2]));
  }
  ojson seg = ojson::array();
  for (const auto& poly : p.segmentation.polygons) seg.push_back(floats_json(poly.data(), poly.size()));
  ojson a;
  a["id"] = id;
  a["image_id"] = image_id;
  a["category_id"] = 1;
  a["iscrowd"] = p.iscrowd ? 1 : 0;
  a["num_keypoints"] = p.num_keypoints;
  a["keypoints"] = kp;
  a["bbox"] = floats_json(p.bbox.data(), 4);
  a["area"] = r2(p.area);
  a["segmentation"] = seg;
  return a;
}

void write_split(const fs::path& root, const std::string& split, const SynthConfig& cfg) {
  const fs::path img_dir = root / split;
  std::error_code ec;
  fs::create_directories(img_dir, ec);
  if (ec) fail_file(img_dir.string(), "cannot create folder: " + ec.message());
  ojson images = ojson::array(), anns = ojson::array();
  int64_t ann_id = 1;
  std::vector<uchar> buf;
  const std::vector<int> params = {cv::IMWRITE_JPEG_QUALITY, cfg.jpeg_quality};
  for (int i = 0; i < cfg.images; ++i) {
    const SynthImage im = generate_synth_image(cfg, i);
    const int64_t image_id = i + 1;
    char name[32];
    std::snprintf(name, sizeof name, "%012lld.jpg", static_cast<long long>(image_id));
    if (!cv::imencode(".jpg", im.image, buf, params)) fail_file((img_dir / name).string(), "JPEG encoding failed");
    {
      std::ofstream f(img_dir / name, std::ios::binary);
      f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size()));
      if (!f) fail_file((img_dir / name).string(), "cannot write image");
    }
    images.push_back({{"id", image_id}, {"file_name", name}, {"width", im.image.cols}, {"height", im.image.rows}});
    for (const auto& p : im.persons) anns.push_back(annotation_json(p, ann_id++, image_id));
    for (const auto& c : im.crowds) anns.push_back(annotation_json(c, ann_id++, image_id));
  }
  ojson doc;
  doc["info"] = {{"description", "posekd synthetic people"}, {"version", "1"}, {"seed", cfg.seed}};
  doc["licenses"] = ojson::array();
  doc["images"] = images;
  doc["annotations"] = anns;
  doc["categories"] = categories_json();
  const fs::path ann_path = coco_annotation_path(root.string(), split);
  std::ofstream f(ann_path, std::ios::binary);
  f << doc.dump();
  if (!f) fail_file(ann_path.string(), "cannot write annotations");
}

}  // namespace

void validate_synth_config(const SynthConfig& c, const std::string& what) {
  auto bad = [&](const std::string& msg) { fail_file(what, msg); };
  if (c.images < 0) bad("image count must be >= 0, got " + std::to_string(c.images));
  if (c.width < 16 || c.height < 16 || c.width > 8192 || c.height > 8192)
    bad("image size must be within 16..8192, got " + std::to_string(c.width) + "x" + std::to_string(c.height));
  if ((c.width_max != 0 && c.width_max < c.width) || (c.height_max != 0 && c.height_max < c.height) ||
      c.width_max > 8192 || c.height_max > 8192)
    bad("width_max/height_max must be 0 or within size..8192");
  if (c.min_people < 0 || c.max_people < c.min_people || c.max_people > 64)
    bad("people per image must satisfy 0 <= min <= max <= 64, got " + std::to_string(c.min_people) + ".." +
        std::to_string(c.max_people));
  if (!(c.min_scale > 0.01) || !(c.max_scale >= c.min_scale) || !(c.max_scale < 10))
    bad("person scale range must satisfy 0.01 < min <= max < 10");
  for (double r : {c.crowd_rate, c.occluder_rate, c.blur_rate})
    if (!(r >= 0 && r <= 1)) bad("rates must be within 0..1");
  if (!(c.clutter >= 0 && c.clutter <= 4)) bad("clutter must be within 0..4");
  if (!(c.max_yaw >= 0 && c.max_yaw <= 3.14159265358979323846)) bad("max_yaw must be within 0..pi");
  if (c.jpeg_quality < 1 || c.jpeg_quality > 100) bad("JPEG quality must be within 1..100");
}

void generate_synth(const std::string& out_dir, const SynthConfig& train, const SynthConfig& val) {
  validate_synth_config(train, out_dir + " (train config)");
  validate_synth_config(val, out_dir + " (val config)");
  const fs::path root(out_dir);
  std::error_code ec;
  fs::create_directories(root / "annotations", ec);
  if (ec || !fs::is_directory(root / "annotations"))
    fail_file(out_dir, "cannot create output folder" + (ec ? ": " + ec.message() : std::string()));
  write_split(root, "train", train);
  write_split(root, "val", val);
}

cv::Mat contact_sheet(const std::string& coco_dir, const std::string& split, int count, int columns, int scale) {
  const fs::path ann_path = coco_annotation_path(coco_dir, split);
  std::ifstream f(ann_path);
  if (!f) fail_file(ann_path.string(), "cannot open annotations");
  nlohmann::json doc;
  try {
    f >> doc;
  } catch (const std::exception& e) {
    fail_file(ann_path.string(), std::string("malformed JSON: ") + e.what());
  }
  if (!doc.contains("images") || !doc["images"].is_array() || !doc.contains("annotations"))
    fail_file(ann_path.string(), "not a COCO annotation file (no images/annotations)");
  columns = std::max(1, columns);
  scale = std::max(1, std::min(8, scale));
  std::map<int64_t, std::vector<const nlohmann::json*>> by_image;
  for (const auto& a : doc["annotations"]) by_image[a.value("image_id", int64_t(-1))].push_back(&a);
  std::vector<cv::Mat> tiles;
  const auto& images = doc["images"];
  for (size_t i = 0; i < images.size() && int(tiles.size()) < count; ++i) {
    const auto& im = images[i];
    const fs::path img_path = fs::path(coco_dir) / split / im.value("file_name", std::string());
    cv::Mat img = cv::imread(img_path.string(), cv::IMREAD_COLOR);
    if (img.empty()) fail_file(img_path.string(), "cannot read image");
    cv::resize(img, img, cv::Size(), scale, scale, cv::INTER_LINEAR);
    const double s = scale;
    for (const auto* ap : by_image[im.value("id", int64_t(-1))]) {
      const auto& a = *ap;
      if (a.value("iscrowd", 0) == 1) {
        for (const auto& poly : a["segmentation"]) {
          std::vector<cv::Point> pts;
          for (size_t k = 0; k + 1 < poly.size(); k += 2)
            pts.emplace_back(int(poly[k].get<double>() * s), int(poly[k + 1].get<double>() * s));
          cv::polylines(img, std::vector<std::vector<cv::Point>>{pts}, true, cv::Scalar(0, 220, 255), 1);
        }
        continue;
      }
      const auto& kp = a["keypoints"];
      if (!kp.is_array() || kp.size() != 51) continue;
      auto pt = [&](int c) { return cv::Point2d(kp[3 * c].get<double>() * s, kp[3 * c + 1].get<double>() * s); };
      auto vis = [&](int c) { return kp[3 * c + 2].get<int>(); };
      const auto& bb = a["bbox"];
      cv::rectangle(img,
                    cv::Rect(int(bb[0].get<double>() * s), int(bb[1].get<double>() * s), int(bb[2].get<double>() * s),
                             int(bb[3].get<double>() * s)),
                    cv::Scalar(160, 160, 160), 1);
      // OpenPose limbs, the neck being the shoulders' midpoint.
      auto op_point = [&](int o, cv::Point2d& p) {
        const int c = skeleton::kOpenPoseToCoco[o];
        if (c >= 0) {
          p = pt(c);
          return vis(c) > 0;
        }
        if (vis(skeleton::kCocoLeftShoulder) == 0 || vis(skeleton::kCocoRightShoulder) == 0) return false;
        p = 0.5 * (pt(skeleton::kCocoLeftShoulder) + pt(skeleton::kCocoRightShoulder));
        return true;
      };
      for (const auto& l : skeleton::kLimbs) {
        cv::Point2d p, q;
        if (!op_point(l.a, p) || !op_point(l.b, q)) continue;
        // colour by side: left (person's) green, right red, centre blue
        const std::string_view na = skeleton::kKeypointNames[l.b];
        const cv::Scalar col = na[0] == 'l'   ? cv::Scalar(60, 220, 60)
                               : na[0] == 'r' ? cv::Scalar(60, 60, 240)
                                              : cv::Scalar(240, 160, 40);
        cv::line(img, p, q, col, 1, cv::LINE_AA);
      }
      for (int c = 0; c < 17; ++c) {
        if (vis(c) == 0) continue;
        const bool left = skeleton::kCocoNames[c].rfind("left", 0) == 0;
        const bool right = skeleton::kCocoNames[c].rfind("right", 0) == 0;
        const cv::Scalar col = left    ? cv::Scalar(60, 255, 60)
                               : right ? cv::Scalar(60, 60, 255)
                                       : cv::Scalar(255, 200, 60);
        cv::circle(img, pt(c), 2, col, vis(c) == 2 ? -1 : 1, cv::LINE_AA);
      }
    }
    tiles.push_back(img);
  }
  if (tiles.empty()) fail_file(ann_path.string(), "no images to show");
  int cw = 0, ch = 0;
  for (const auto& t : tiles) cw = std::max(cw, t.cols), ch = std::max(ch, t.rows);
  const int cols = std::min(columns, int(tiles.size()));
  const int rows = (int(tiles.size()) + cols - 1) / cols;
  const int pad = 2;
  cv::Mat sheet(rows * (ch + pad) + pad, cols * (cw + pad) + pad, CV_8UC3, cv::Scalar(255, 255, 255));
  for (size_t i = 0; i < tiles.size(); ++i) {
    const int r = int(i) / cols, c = int(i) % cols;
    tiles[i].copyTo(sheet(cv::Rect(pad + c * (cw + pad), pad + r * (ch + pad), tiles[i].cols, tiles[i].rows)));
  }
  return sheet;
}

}  // namespace posekd::data
