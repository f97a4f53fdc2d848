// COCO person-keypoints annotations in memory: every image, every person, crowd regions.
// Order is deterministic: images in the JSON `images` order, persons in JSON annotation order.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace posekd::data {

// The COCO folder layout: ROOT/annotations/person_keypoints_<split>.json and the images in ROOT/<split>/.
inline std::string coco_annotation_path(const std::string& root, const std::string& split) {
  return (std::filesystem::path(root) / "annotations" / ("person_keypoints_" + split + ".json")).string();
}
inline std::string coco_image_dir(const std::string& root, const std::string& split) {
  return (std::filesystem::path(root) / split).string();
}

// A COCO segmentation: polygons (each a flat x,y list) or an RLE over the image
// (uncompressed `counts` or the compressed LEB128-like string form, decoded at load time).
struct Segmentation {
  std::vector<std::vector<float>> polygons;  // empty when rle is used
  std::vector<uint32_t> rle_counts;          // column-major run lengths, starting with 0s
  int rle_h = 0, rle_w = 0;
  bool empty() const { return polygons.empty() && rle_counts.empty(); }
};

struct CocoPerson {
  int64_t ann_id = 0;
  std::array<float, 51> keypoints{};  // COCO-17 order, raw x, y, v (v: 0 not labeled, 1 occluded, 2 visible)
  std::array<float, 4> bbox{};        // x, y, w, h
  float area = 0.f;
  int num_keypoints = 0;
  bool iscrowd = false;
  Segmentation segmentation;  // kept for crowds (loss mask); may be empty for others
};

struct CocoImage {
  int64_t id = 0;
  std::string file_name;
  int width = 0, height = 0;
  std::vector<CocoPerson> persons;  // iscrowd == 0, JSON order (with or without keypoints)
  std::vector<CocoPerson> crowds;   // iscrowd == 1
};

struct CocoDataset {
  std::string annotation_path;
  std::string image_dir;
  std::vector<CocoImage> images;  // JSON `images` order
  // Counted problems found while loading (bad values skipped, unknown image ids, ...).
  int64_t skipped_annotations = 0;
  std::vector<std::string> warnings;  // first few, human readable
};

}  // namespace posekd::data
