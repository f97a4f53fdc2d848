// Reads the Lightweight-OpenPose repo's `prepared_train_annotation.pkl` (scripts/prepare_train_labels.py,
// a plain pickle: a list of per-person sample dicts, see spec/openpose.md 2.3) into a CocoDataset.
// Samples are grouped by image (order of first appearance); an image's persons are its samples'
// persons plus their `processed_other_annotations`, de-duplicated (same bbox and keypoints);
// the image's crowd `segmentations` become crowds. Visibility is mapped back to COCO
// (internal 2 -> 0 not labeled, 0 -> 1 occluded, 1 -> 2 visible). ann_id is not stored in the
// pickle: persons are numbered 1, 2, ... in order.
#pragma once
#include <string>

#include "posekd/data/coco.h"
#include "posekd/io/value.h"

namespace posekd::data {

CocoDataset load_prepared_annotations(const std::string& path);
// The same from an already-unpickled value; `path` names the source in errors.
CocoDataset prepared_to_dataset(const io::Value& samples, const std::string& path);

}  // namespace posekd::data
