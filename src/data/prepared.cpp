#include "posekd/data/prepared.h"

#include <map>
#include <unordered_map>

#include "posekd/core/error.h"
#include "posekd/data/coco_json.h"
#include "posekd/io/pickle.h"

namespace posekd::data {

namespace {

float num(const io::Value& v, const std::string& what) { return static_cast<float>(v.as_double(what)); }

data::CocoPerson person_from(const io::Value& d, const std::string& what) {
  data::CocoPerson p;
  const io::Value& bbox = d.at("bbox", what);
  const auto& b = bbox.items(what + ".bbox");
  if (b.size() != 4) throw Error(what + ".bbox: expected 4 numbers, got " + std::to_string(b.size()));
  for (int i = 0; i < 4; ++i) p.bbox[i] = num(b[i], what + ".bbox");
  if (const io::Value* a = d.find("segment_area")) p.area = num(*a, what + ".segment_area");
  if (const io::Value* n = d.find("num_keypoints"))
    p.num_keypoints = static_cast<int>(n->as_int(what + ".num_keypoints"));
  const auto& kps = d.at("keypoints", what).items(what + ".keypoints");
  if (kps.size() != 17) throw Error(what + ".keypoints: expected 17 keypoints, got " + std::to_string(kps.size()));
  for (int k = 0; k < 17; ++k) {
    const std::string kw = what + ".keypoints[" + std::to_string(k) + "]";
    const auto& xyv = kps[k].items(kw);
    if (xyv.size() != 3) throw Error(kw + ": expected [x, y, v]");
    p.keypoints[3 * k] = num(xyv[0], kw);
    p.keypoints[3 * k + 1] = num(xyv[1], kw);
    int v = static_cast<int>(xyv[2].as_double(kw));
    // internal: 0 occluded, 1 visible, 2 not labeled -> COCO: 1, 2, 0
    p.keypoints[3 * k + 2] = v == 0 ? 1.f : v == 1 ? 2.f : 0.f;
  }
  return p;
}

data::Segmentation segmentation_from(const io::Value& s, const std::string& what) {
  data::Segmentation seg;
  if (s.is_dict()) {
    const auto& size = s.at("size", what).items(what + ".size");
    if (size.size() != 2) throw Error(what + ".size: expected [h, w]");
    seg.rle_h = static_cast<int>(size[0].as_int(what + ".size"));
    seg.rle_w = static_cast<int>(size[1].as_int(what + ".size"));
    const io::Value& counts = s.at("counts", what);
    if (counts.is_string() || counts.is_bytes()) {
      seg.rle_counts = decode_rle_string(counts.is_string() ? counts.as_string() : counts.as_bytes(), what);
    } else {
      for (const auto& c : counts.items(what + ".counts")) {
        int64_t n = c.as_int(what + ".counts");
        if (n < 0) throw Error(what + ".counts: negative run length");
        seg.rle_counts.push_back(static_cast<uint32_t>(n));
      }
    }
    uint64_t total = 0;
    for (auto c : seg.rle_counts) total += c;
    if (seg.rle_h < 0 || seg.rle_w < 0 || total != static_cast<uint64_t>(seg.rle_h) * seg.rle_w)
      throw Error(what + ": RLE run lengths sum to " + std::to_string(total) +
                  ", expected h*w = " + std::to_string(static_cast<int64_t>(seg.rle_h) * seg.rle_w));
  } else {
    for (const auto& poly : s.items(what)) {
      std::vector<float> xy;
      for (const auto& x : poly.items(what)) xy.push_back(num(x, what));
      seg.polygons.push_back(std::move(xy));
    }
  }
  return seg;
}

bool same_person(const data::CocoPerson& a, const data::CocoPerson& b) {
  return a.bbox == b.bbox && a.keypoints == b.keypoints;
}

}  // namespace

data::CocoDataset prepared_to_dataset(const io::Value& samples, const std::string& path) {
  data::CocoDataset ds;
  ds.annotation_path = path;
  std::unordered_map<int64_t, size_t> image_index;
  const auto& list = samples.items(path + ": prepared annotations");
  int64_t next_id = 1;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string what = path + ": sample " + std::to_string(i);
    const io::Value& s = list[i];
    s.dict_data(what);
    int64_t image_id = s.at("image_id", what).as_int(what + ".image_id");
    auto it = image_index.find(image_id);
    if (it == image_index.end()) {
      data::CocoImage img;
      img.id = image_id;
      img.file_name = s.at("img_paths", what).as_string(what + ".img_paths");
      img.width = static_cast<int>(s.at("img_width", what).as_double(what + ".img_width"));
      img.height = static_cast<int>(s.at("img_height", what).as_double(what + ".img_height"));
      if (const io::Value* segs = s.find("segmentations")) {
        const auto& sl = segs->items(what + ".segmentations");
        for (size_t k = 0; k < sl.size(); ++k) {
          data::CocoPerson crowd;
          crowd.iscrowd = true;
          crowd.segmentation = segmentation_from(sl[k], what + ".segmentations[" + std::to_string(k) + "]");
          crowd.ann_id = next_id++;
          img.crowds.push_back(std::move(crowd));
        }
      }
      it = image_index.emplace(image_id, ds.images.size()).first;
      ds.images.push_back(std::move(img));
    }
    data::CocoImage& img = ds.images[it->second];
    auto add = [&](data::CocoPerson p) {
      for (const auto& q : img.persons)
        if (same_person(p, q)) return;
      p.ann_id = next_id++;
      img.persons.push_back(std::move(p));
    };
    add(person_from(s, what));
    if (const io::Value* others = s.find("processed_other_annotations")) {
      const auto& ol = others->items(what + ".processed_other_annotations");
      for (size_t k = 0; k < ol.size(); ++k)
        add(person_from(ol[k], what + ".processed_other_annotations[" + std::to_string(k) + "]"));
    }
  }
  return ds;
}

data::CocoDataset load_prepared_annotations(const std::string& path) {
  return prepared_to_dataset(io::load_pickle_file(path), path);
}

}  // namespace posekd::data
