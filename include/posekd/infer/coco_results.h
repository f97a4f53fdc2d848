// COCO keypoint results files (`[{"image_id", "category_id", "keypoints", "score"}]`), a minimal
// ground-truth reader for `eval --results` (a stop-gap until the data module's loader is wired in),
// and poses -> detections.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "posekd/data/coco.h"
#include "posekd/infer/coco_eval.h"
#include "posekd/infer/decode.h"

namespace posekd::infer {

// One detection per pose (category 1), keypoints and score as decoded.
std::vector<Detection> poses_to_detections(int64_t image_id, const std::vector<Pose>& poses);

// Writes a JSON array of {image_id, category_id: 1, keypoints[51], score}. Throws posekd::Error.
void write_results_json(const std::string& path, const std::vector<Detection>& dts);

// Reads a results array. Entries whose category_id is not 1 are dropped (pycocotools would not
// evaluate them) and counted in *dropped. Errors name the file (with line/column for bad JSON).
std::vector<Detection> read_results_json(const std::string& path, int64_t* dropped = nullptr);

// Reads what COCOeval needs from a COCO person-keypoints annotation file: images (id, file_name,
// width, height) and annotations (id, image_id, keypoints, bbox, area, num_keypoints, iscrowd) of
// category 1. Segmentations are not read. Errors name the file (line/column for bad JSON).
data::CocoDataset read_coco_gt_for_eval(const std::string& path);

}  // namespace posekd::infer
