// Synthetic people: a deterministic generator of COCO person-keypoint datasets (`posekd synth`).
//
// Each person is an articulated pseudo-3D body (17 COCO joints, joint-angle limits, poses from
// standing to sitting and reaching) seen from any direction (yaw), projected orthographically and
// drawn as shaded capsules / polygons with clothing colours, textures and a face (eyes, nose, ears).
// Scenes hold 0..N people far-to-near over cluttered backgrounds; keypoints covered by a nearer
// person (or the person's own nearer body part, or a foreground object) are labelled v=1, keypoints
// outside the image v=0 at (0,0), face points turned away from the camera v=0.
// Everything is a pure function of the seed: SynthRng implements its own distributions on top of
// std::mt19937_64, so outputs (JSON and JPEG bytes) are identical for the same seed.
#pragma once
#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "posekd/data/coco.h"

namespace posekd::data {

// Portable random numbers: mt19937_64 raw output, distributions implemented here.
class SynthRng {
 public:
  explicit SynthRng(uint64_t seed) : gen_(seed) {}
  uint64_t next() { return gen_(); }
  double uniform() { return double(gen_() >> 11) * (1.0 / 9007199254740992.0); }  // [0,1)
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  int uniform_int(int lo, int hi);  // inclusive range, lo <= hi
  bool bernoulli(double p) { return uniform() < p; }
  double normal(double mean, double stddev);  // Box-Muller
 private:
  std::mt19937_64 gen_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// splitmix64: derive independent seeds (per image, per split).
uint64_t synth_mix(uint64_t x);

struct SynthConfig {
  int images = 100;
  uint64_t seed = 1;
  int width = 160, height = 120;  // image size; with *_max > size, drawn per image in [size, max]
  int width_max = 0, height_max = 0;
  int min_people = 0, max_people = 4;        // labelled people per image
  double min_scale = 0.25, max_scale = 1.3;  // standing height / image height (log-uniform)
  double crowd_rate = 0.08;                  // probability that an image has an iscrowd=1 region
  double occluder_rate = 0.15;               // probability of a foreground (non-person) occluder
  double blur_rate = 0.3;                    // probability of a Gaussian blur
  // Background clutter (furniture-like shapes and person-like distractors), as a fraction of the
  // default amount: 1 = the default (hard), 0 = gradients and blotches only. Values other than 1
  // change the images (the demo uses an easier setting); 1 keeps `posekd synth` byte-identical.
  double clutter = 1.0;
  // Largest |yaw| of the labelled people (radians): 3.14159... (the default) = every direction;
  // smaller values keep them facing the camera (no back views: left and right are unambiguous).
  double max_yaw = 3.14159265358979323846;
  int jpeg_quality = 90;
};

// Joint angles (radians). Index 0 = person's left, 1 = person's right.
struct BodyPose {
  double torso_pitch = 0, torso_side = 0, torso_twist = 0;               // forward lean, side bend, shoulder twist
  double head_yaw = 0, head_pitch = 0;                                   // relative to the torso
  std::array<double, 2> arm_elev{}, arm_azim{}, elbow{}, elbow_twist{};  // shoulder: 0 hangs down,
  // pi/2 horizontal; azimuth 0 sideways, pi/2 forward, <0 backward; elbow flexion 0 straight.
  std::array<double, 2> hip_flex{}, hip_abd{}, knee{};  // hip flexion forward, abduction, knee flexion
};

struct PersonLook {
  cv::Scalar skin, hair, shirt, pants, shoes, pattern;
  int shirt_pattern = 0;  // 0 plain, 1 horizontal stripes, 2 vertical stripes, 3 dots
  bool long_sleeves = true, shorts = false;
};

struct SynthPerson {
  double x = 0, y = 0;  // image position of the pelvis (hip centre), pixels
  double height = 100;  // standing height (top of head to ankle), pixels
  double yaw = 0;       // 0 faces the camera, pi shows the back, +pi/2 faces the image's right
  double roll = 0;      // in-plane rotation (radians, positive = clockwise on screen)
  BodyPose pose;
  PersonLook look;
};

// The 17 COCO keypoints of a person: image x, y and depth z (larger = farther); `labelable` is
// false for face points turned away from the camera (never labelled).
struct BodyKeypoints {
  std::array<cv::Point3d, 17> p{};
  std::array<bool, 17> labelable{};
};
BodyKeypoints pose_keypoints(const SynthPerson& person);

// Random person (pose, view, clothes) at a pelvis position and standing height; yaw is uniform
// in [-max_yaw, max_yaw).
SynthPerson sample_person(SynthRng& rng, double x, double y, double height, double max_yaw = 3.14159265358979323846);
// Clamps the joint angles to the limits of the body model.
BodyPose clamp_pose(BodyPose pose);

// Foreground object (not a person) drawn in front of everybody.
struct SynthOccluder {
  cv::Rect2d box;
  bool ellipse = false;
  cv::Scalar color;
};

struct SynthScene {
  int width = 160, height = 120;
  std::vector<SynthPerson> people;               // drawn in this order (far to near)
  std::vector<std::vector<SynthPerson>> crowds;  // groups of small unlabelled people (behind)
  std::vector<SynthOccluder> occluders;          // drawn last
  uint64_t style_seed = 0;                       // background, clutter and photometric effects
  bool plain_background = false;                 // flat grey, no clutter, blur or noise (for tests)
  double clutter = 1.0;                          // SynthConfig::clutter
  double blur_sigma = 0;
};

struct SynthImage {
  cv::Mat image;                    // BGR 8-bit
  std::vector<CocoPerson> persons;  // annotations, same order as scene.people (dropped if invisible)
  std::vector<int> person_index;    // scene.people index of each annotation
  std::vector<CocoPerson> crowds;
  std::vector<cv::Mat> masks;  // full body mask of each scene.people entry (CV_8U, 0/255)
};

SynthScene sample_scene(const SynthConfig& cfg, uint64_t image_seed);
SynthImage render_scene(const SynthScene& scene);
// Image `index` of a split: sample_scene(cfg, seed of the index) then render_scene.
SynthImage generate_synth_image(const SynthConfig& cfg, int index);

// Writes a COCO folder: annotations/person_keypoints_{train,val}.json, train/*.jpg, val/*.jpg.
// Throws posekd::Error for a bad config or an unwritable folder.
void generate_synth(const std::string& out_dir, const SynthConfig& train, const SynthConfig& val);
// Checks a config; throws posekd::Error naming `what` (e.g. "--train") on bad values.
void validate_synth_config(const SynthConfig& cfg, const std::string& what);

// Tiles the first `count` images of `coco_dir`/{split} with their keypoints and skeleton drawn,
// each magnified `scale` times, `columns` per row.
cv::Mat contact_sheet(const std::string& coco_dir, const std::string& split, int count, int columns = 4, int scale = 2);

}  // namespace posekd::data
