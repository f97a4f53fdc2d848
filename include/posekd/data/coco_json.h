// Loading COCO person-keypoint annotations (streaming JSON parse) with an optional binary cache.
#pragma once
#include <cstdint>
#include <string>

#include "posekd/data/coco.h"

namespace posekd::data {

struct CocoLoadOptions {
  // Keep only the first `subset` images, in JSON `images` order, that have at least one
  // non-crowd person with num_keypoints > 0 (see has_keypoint_person). Images without such a
  // person are dropped when subset > 0. 0 = keep every image (with or without people).
  int64_t subset = 0;
  // Directory for the binary cache `<cache_dir>/<json stem>.posekd-coco`. Empty = no cache.
  // The cache is keyed by the JSON's size, mtime and the cache format version; a stale or
  // unreadable cache is rebuilt (written atomically: temp file + rename).
  std::string cache_dir;
  bool use_cache = true;
};

// Parses `ann_json` with a SAX (streaming) parser: only one `images`/`annotations` element is
// held as a DOM at a time. Fills images (JSON order), persons (iscrowd 0, JSON order) and crowds
// (iscrowd 1) with their segmentations (polygons, uncompressed RLE, compressed-string RLE decoded).
// Only crowds keep a segmentation (the loss mask needs nothing else); persons' are not stored,
// which halves memory and the cache size for train2017.
// Annotations whose category_id is present and not 1 (person) are ignored.
// Malformed JSON (or unreadable file) -> posekd::Error "PATH:LINE:COL: malformed JSON: ...".
// Wrong value types, negative/zero sizes, unknown image ids, duplicate image ids: the record is
// skipped and counted (skipped_annotations counts skipped annotations AND skipped image records),
// the first few described in `warnings`. Keypoints outside their image are kept (keypoints.h
// re-flags them as not labeled) and counted in one summary warning.
CocoDataset load_coco(const std::string& ann_json, const std::string& image_dir, const CocoLoadOptions& options = {});

// True when the image has a non-crowd person with num_keypoints > 0 (the sample criterion).
bool has_keypoint_person(const CocoImage& image);

// Decodes a COCO compressed RLE string (pycocotools rleFrString) into run lengths (also used by the
// prepared-pickle reader). Throws posekd::Error "<what>: ..." on an invalid character or a negative run.
std::vector<uint32_t> decode_rle_string(const std::string& s, const std::string& what = "compressed RLE string");

// Path of the cache file load_coco would use.
std::string coco_cache_path(const std::string& ann_json, const std::string& cache_dir);

}  // namespace posekd::data
