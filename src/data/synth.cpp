// Synthetic people: body model, person rendering, scenes and their COCO annotations.
#include "posekd/data/synth.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <opencv2/imgproc.hpp>

namespace posekd::data {

// ------------------------------------------------------------------------------------------------
// Random numbers

int SynthRng::uniform_int(int lo, int hi) {
  if (hi <= lo) return lo;
  const uint64_t n = uint64_t(int64_t(hi) - int64_t(lo) + 1);
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // rejection: no modulo bias
  uint64_t x;
  do x = gen_();
  while (x >= limit);
  return int(int64_t(lo) + int64_t(x % n));
}

double SynthRng::normal(double mean, double stddev) {
  if (has_spare_) {
    has_spare_ = false;
    return mean + stddev * spare_;
  }
  double u1 = uniform();
  const double u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double a = 2.0 * 3.14159265358979323846 * u2;
  spare_ = r * std::sin(a);
  has_spare_ = true;
  return mean + stddev * r * std::cos(a);
}

uint64_t synth_mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

namespace {

constexpr double kPi = 3.14159265358979323846;
double deg(double d) { return d * kPi / 180.0; }
using V3 = cv::Vec3d;

V3 unit(const V3& v, const V3& fallback) {
  const double n = cv::norm(v);
  return n > 1e-9 ? v / n : fallback;
}
V3 perp_to(const V3& v, const V3& d) { return v - d * d.dot(v); }  // d is a unit vector
double clampd(double v, double lo, double hi) { return std::min(hi, std::max(lo, v)); }

// Body proportions, fraction of the standing height (top of head to ankle).
constexpr double kSpine = 0.30, kHipHalf = 0.075, kShoulderHalf = 0.115, kNeckLen = 0.10;
constexpr double kHeadR = 0.068, kUpperArm = 0.17, kForearm = 0.15, kThigh = 0.245, kShin = 0.235;
constexpr double kTorsoDepth = 0.06;  // half front-back thickness of the chest
// Part radii.
constexpr double kRUpperArm = 0.032, kRForearm = 0.027, kRHand = 0.025, kRThigh = 0.05, kRShin = 0.037, kRFoot = 0.022,
                 kRNeck = 0.032;

// Face points in the head frame (left, down, forward), COCO order 0..4.
const std::array<V3, 5> kFace = {V3(0, 0.18, 1.0), V3(0.36, -0.12, 0.87), V3(-0.36, -0.12, 0.87), V3(0.97, 0.05, -0.1),
                                 V3(-0.97, 0.05, -0.1)};

// Joints in the body frame: x = person's left, y = down, z = forward; pelvis at 0; unit = height.
struct BodyJoints {
  V3 pelvis, neck, head;
  std::array<V3, 2> sho, elb, wri, hand, hip, knee, ank, toe;  // [0] left, [1] right
  std::array<V3, 5> face, face_n;
  V3 up_t, lat_s, fwd_s, lat_h, fwd_h, head_fwd, head_down;
};

BodyJoints body_joints(const BodyPose& q) {
  BodyJoints J;
  const V3 down(0, 1, 0), fwd(0, 0, 1), lat(1, 0, 0);
  const double p = q.torso_pitch, s = q.torso_side;
  J.up_t = unit(V3(std::sin(s), -std::cos(s) * std::cos(p), std::cos(s) * std::sin(p)), -down);
  const V3 lat_t = unit(perp_to(lat, J.up_t), lat);
  const V3 fwd_t = J.up_t.cross(lat_t);
  J.lat_s = unit(std::cos(q.torso_twist) * lat_t + std::sin(q.torso_twist) * fwd_t, lat_t);
  J.fwd_s = J.up_t.cross(J.lat_s);
  J.lat_h = lat;
  J.fwd_h = fwd;
  J.pelvis = V3(0, 0, 0);
  J.neck = J.up_t * kSpine;
  const V3 down_t = -J.up_t;
  for (int i = 0; i < 2; ++i) {
    const double sg = i == 0 ? 1.0 : -1.0;
    // Arm.
    J.sho[i] = J.neck + sg * kShoulderHalf * J.lat_s;
    const double e = q.arm_elev[i], az = q.arm_azim[i];
    const V3 d =
        unit(std::cos(e) * down_t + std::sin(e) * (std::cos(az) * sg * J.lat_s + std::sin(az) * J.fwd_s), down_t);
    J.elb[i] = J.sho[i] + kUpperArm * d;
    V3 n0 = perp_to(J.fwd_s, d);
    if (cv::norm(n0) < 0.25) n0 = perp_to(J.up_t, d);
    n0 = unit(n0, J.fwd_s);
    const double tw = q.elbow_twist[i];
    const V3 n = unit(std::cos(tw) * n0 + sg * std::sin(tw) * d.cross(n0), n0);
    const V3 f = unit(std::cos(q.elbow[i]) * d + std::sin(q.elbow[i]) * n, d);
    J.wri[i] = J.elb[i] + kForearm * f;
    J.hand[i] = J.wri[i] + 0.05 * f;
    // Leg.
    J.hip[i] = sg * kHipHalf * lat;
    const double fl = q.hip_flex[i], ab = q.hip_abd[i];
    const V3 t = unit(std::cos(ab) * (std::cos(fl) * down + std::sin(fl) * fwd) + std::sin(ab) * sg * lat, down);
    const V3 kn = unit(perp_to(V3(0, t[2], -t[1]), t), -fwd);  // knee bends backwards
    const V3 sh = unit(std::cos(q.knee[i]) * t + std::sin(q.knee[i]) * kn, t);
    J.knee[i] = J.hip[i] + kThigh * t;
    J.ank[i] = J.knee[i] + kShin * sh;
    const V3 foot = unit(perp_to(fwd, sh), fwd);
    J.toe[i] = J.ank[i] + 0.065 * foot + 0.012 * sh;
  }
  // Head: nod bends the neck a little, the head turns (yaw) and nods (pitch) about it.
  const V3 hup = unit(std::cos(0.4 * q.head_pitch) * J.up_t + std::sin(0.4 * q.head_pitch) * J.fwd_s, J.up_t);
  J.head = J.neck + kNeckLen * hup;
  const double hy = q.head_yaw, hp = q.head_pitch;
  const V3 hf0 = std::cos(hy) * J.fwd_s + std::sin(hy) * J.lat_s;
  const V3 hl = std::cos(hy) * J.lat_s - std::sin(hy) * J.fwd_s;
  const V3 hf = std::cos(hp) * hf0 + std::sin(hp) * down_t;
  const V3 hd = std::cos(hp) * down_t - std::sin(hp) * hf0;
  J.head_fwd = hf;
  J.head_down = hd;
  for (int k = 0; k < 5; ++k) {
    const V3 o = kFace[k][0] * hl + kFace[k][1] * hd + kFace[k][2] * hf;
    J.face[k] = J.head + kHeadR * o;
    J.face_n[k] = unit(o, hf);
  }
  return J;
}

// Body frame -> camera: yaw about the vertical, orthographic projection, in-plane roll.
struct Camera {
  double cy, sy, cr, sr, x, y, h;
  explicit Camera(const SynthPerson& p)
      : cy(std::cos(p.yaw)),
        sy(std::sin(p.yaw)),
        cr(std::cos(p.roll)),
        sr(std::sin(p.roll)),
        x(p.x),
        y(p.y),
        h(p.height) {}
  V3 dir(const V3& b) const {
    const double xc = b[0] * cy + b[2] * sy, zc = b[0] * sy - b[2] * cy, yc = b[1];
    return V3(xc * cr - yc * sr, xc * sr + yc * cr, zc);
  }
  V3 point(const V3& b) const {
    const V3 d = dir(b);
    return V3(x + h * d[0], y + h * d[1], h * d[2]);
  }
};

cv::Point2d p2(const V3& v) { return {v[0], v[1]}; }

// Face-point visibility thresholds on the camera z of the surface normal (negative = towards us).
// The nose tip stays visible in profile; an eye or ear needs to face us more.
constexpr double kNoseVisible = 0.25, kEyeVisible = -0.1, kEarVisible = 0.35;
bool face_labelable(int k, const V3& n_cam) {
  return n_cam[2] < (k == 0 ? kNoseVisible : k >= 3 ? kEarVisible : kEyeVisible);
}

// COCO keypoint k -> body-frame point.
V3 coco_point(const BodyJoints& J, int k) {
  if (k < 5) return J.face[k];
  const int side = (k - 5) % 2;  // COCO alternates left (odd index), right
  switch ((k - 5) / 2) {
    case 0:
      return J.sho[side];
    case 1:
      return J.elb[side];
    case 2:
      return J.wri[side];
    case 3:
      return J.hip[side];
    case 4:
      return J.knee[side];
    default:
      return J.ank[side];
  }
}

// ------------------------------------------------------------------------------------------------
// Person parts: geometry for drawing and for the painter's-order occlusion test.

enum PartId {
  kTorso,
  kNeckPart,
  kHead,
  kUpperArmL,
  kUpperArmR,
  kForearmL,
  kForearmR,
  kHandL,
  kHandR,
  kThighL,
  kThighR,
  kShinL,
  kShinR,
  kFootL,
  kFootR,
  kNumParts
};

struct Part {
  int id = 0;
  cv::Point2d a, b;  // capsule ends (head: a = centre)
  double r = 0;
  std::vector<cv::Point2f> poly;  // torso outline
  double depth = 0;
  cv::Scalar color;
};

struct Posed {
  std::vector<Part> parts;  // painter's order: far first
  BodyKeypoints kp;
  std::array<bool, 17> self_occluded{};
  V3 head_fwd_cam, head_down_cam, face_n[5];
  double head_r = 0;
};

// Owners of COCO keypoint k (two parts; the face points belong to the head only).
std::array<int, 2> owners(int k) {
  if (k < 5) return {kHead, kHead};
  const int side = (k - 5) % 2;
  switch ((k - 5) / 2) {
    case 0:
      return {kTorso, kUpperArmL + side};
    case 1:
      return {kUpperArmL + side, kForearmL + side};
    case 2:
      return {kForearmL + side, kHandL + side};
    case 3:
      return {kTorso, kThighL + side};
    case 4:
      return {kThighL + side, kShinL + side};
    default:
      return {kShinL + side, kFootL + side};
  }
}

double seg_dist(const cv::Point2d& p, const cv::Point2d& a, const cv::Point2d& b) {
  const cv::Point2d ab = b - a, ap = p - a;
  const double l2 = ab.dot(ab);
  const double t = l2 > 1e-12 ? clampd(ap.dot(ab) / l2, 0.0, 1.0) : 0.0;
  const cv::Point2d c = a + t * ab;
  return std::hypot(p.x - c.x, p.y - c.y);
}

bool part_covers(const Part& part, const cv::Point2d& p) {
  if (part.id == kTorso) return cv::pointPolygonTest(part.poly, cv::Point2f(float(p.x), float(p.y)), false) >= 0;
  return seg_dist(p, part.a, part.b) <= part.r;
}

cv::Point2d unit2(const cv::Point2d& v, const cv::Point2d& fallback) {
  const double n = std::hypot(v.x, v.y);
  return n > 1e-9 ? v * (1.0 / n) : fallback;
}

Posed pose_person(const SynthPerson& P) {
  const BodyJoints J = body_joints(P.pose);
  const Camera cam(P);
  const double H = P.height;
  Posed out;
  for (int k = 0; k < 17; ++k) {
    const V3 c = cam.point(coco_point(J, k));
    out.kp.p[k] = cv::Point3d(c[0], c[1], c[2]);
    out.kp.labelable[k] = true;
  }
  for (int k = 0; k < 5; ++k) {
    out.face_n[k] = cam.dir(J.face_n[k]);
    out.kp.labelable[k] = face_labelable(k, out.face_n[k]);
  }
  out.head_fwd_cam = cam.dir(J.head_fwd);
  out.head_down_cam = cam.dir(J.head_down);
  out.head_r = kHeadR * H;

  const PersonLook& L = P.look;
  auto capsule = [&](int id, const V3& a, const V3& b, double r, const cv::Scalar& col, double dz) {
    const V3 ca = cam.point(a), cb = cam.point(b);
    Part part;
    part.id = id;
    part.a = p2(ca);
    part.b = p2(cb);
    part.r = r * H;
    part.depth = 0.5 * (ca[2] + cb[2]) + dz * H;
    part.color = col;
    out.parts.push_back(part);
  };
  for (int i = 0; i < 2; ++i) {
    capsule(kUpperArmL + i, J.sho[i], J.elb[i], kRUpperArm, L.shirt, 0);
    capsule(kForearmL + i, J.elb[i], J.wri[i], kRForearm, L.long_sleeves ? L.shirt : L.skin, -0.001);
    capsule(kHandL + i, J.wri[i], J.hand[i], kRHand, L.skin, -0.002);
    capsule(kThighL + i, J.hip[i], J.knee[i], kRThigh, L.pants, 0);
    capsule(kShinL + i, J.knee[i], J.ank[i], kRShin, L.shorts ? L.skin : L.pants, -0.001);
    capsule(kFootL + i, J.ank[i], J.toe[i], kRFoot, L.shoes, -0.002);
  }
  capsule(kNeckPart, J.neck, J.head, kRNeck, L.skin, 0.012);
  {  // head: a circle, drawn by draw_head
    const V3 c = cam.point(J.head);
    Part part;
    part.id = kHead;
    part.a = part.b = p2(c);
    part.r = kHeadR * H;
    part.depth = c[2];
    part.color = L.skin;
    out.parts.push_back(part);
  }
  {  // torso: silhouette of an elliptic cylinder at shoulder, waist and hip level
    const V3 neck = cam.point(J.neck), pelvis = cam.point(J.pelvis);
    const cv::Point2d n2 = p2(neck), c2 = p2(pelvis);
    const cv::Point2d u = unit2(n2 - c2, cv::Point2d(std::sin(P.roll), -std::cos(P.roll)));
    const cv::Point2d nn(-u.y, u.x);  // perpendicular
    auto half = [&](const V3& span, const V3& depth) {
      const V3 s = cam.dir(span) * H, d = cam.dir(depth) * H;
      const double a = s[0] * nn.x + s[1] * nn.y, b = d[0] * nn.x + d[1] * nn.y;
      return std::sqrt(a * a + b * b);
    };
    const double ws = half(J.lat_s * (kShoulderHalf + 0.015), J.fwd_s * kTorsoDepth);
    const double wh = half(J.lat_h * (kHipHalf + 0.8 * kRThigh), J.fwd_h * kTorsoDepth);
    const double ww = 0.85 * (0.5 * (ws + wh));
    const cv::Point2d w2 = c2 + 0.45 * (n2 - c2);
    const double t = 0.02 * H;
    const std::vector<cv::Point2d> side = {n2 + u * (1.4 * t) + nn * (0.55 * ws), n2 - u * t + nn * ws, w2 + nn * ww,
                                           c2 + nn * wh, c2 - u * (3 * t) + nn * (0.75 * wh)};
    Part part;
    part.id = kTorso;
    for (const auto& q : side) part.poly.emplace_back(float(q.x), float(q.y));
    for (int i = int(side.size()) - 1; i >= 0; --i) {
      const cv::Point2d q = side[i] - 2.0 * nn * ((side[i] - (c2 + u * ((side[i] - c2).dot(u)))).dot(nn));
      part.poly.emplace_back(float(q.x), float(q.y));
    }
    part.a = n2;
    part.b = c2;
    part.r = ws;
    part.depth = 0.5 * (neck[2] + pelvis[2]) + 0.5 * kTorsoDepth * H;
    part.color = L.shirt;
    out.parts.push_back(part);
  }
  std::stable_sort(out.parts.begin(), out.parts.end(), [](const Part& a, const Part& b) { return a.depth > b.depth; });
  // Self-occlusion: a part drawn after both owners of a keypoint covers it.
  std::array<int, kNumParts> order{};
  for (int i = 0; i < int(out.parts.size()); ++i) order[out.parts[i].id] = i;
  for (int k = 0; k < 17; ++k) {
    const auto own = owners(k);
    const int last = std::max(order[own[0]], order[own[1]]);
    const cv::Point2d pt(out.kp.p[k].x, out.kp.p[k].y);
    for (int i = last + 1; i < int(out.parts.size()) && !out.self_occluded[k]; ++i)
      if (part_covers(out.parts[i], pt)) out.self_occluded[k] = true;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Drawing

constexpr int kShift = 4;
constexpr double kOne = 1 << kShift;
cv::Point fx(const cv::Point2d& p) { return {int(std::lround(p.x * kOne)), int(std::lround(p.y * kOne))}; }
int fr(double r) { return std::max(0, int(std::lround(r * kOne))); }
cv::Scalar scale_color(const cv::Scalar& c, double f) {
  return cv::Scalar(std::min(255.0, c[0] * f), std::min(255.0, c[1] * f), std::min(255.0, c[2] * f));
}
cv::Scalar mix_color(const cv::Scalar& a, const cv::Scalar& b, double t) { return a * (1 - t) + b * t; }

void draw_capsule(cv::Mat& img, cv::Mat& mask, const cv::Point2d& a, const cv::Point2d& b, double r,
                  const cv::Scalar& col, const cv::Point2d& light) {
  const int th = std::max(1, int(std::lround(2 * r)));
  cv::line(img, fx(a), fx(b), scale_color(col, 0.72), th, cv::LINE_AA, kShift);
  if (r >= 1.2) {
    const cv::Point2d o = light * (0.22 * r);
    cv::line(img, fx(a + o), fx(b + o), col, std::max(1, int(std::lround(1.3 * r))), cv::LINE_AA, kShift);
  }
  if (r >= 2.5) {
    const cv::Point2d o = light * (0.45 * r);
    cv::line(img, fx(a + o), fx(b + o), scale_color(col, 1.22), std::max(1, int(std::lround(0.5 * r))), cv::LINE_AA,
             kShift);
  }
  cv::line(mask, fx(a), fx(b), cv::Scalar(255), th, cv::LINE_8, kShift);
}

void draw_torso(cv::Mat& img, cv::Mat& mask, const Part& part, const PersonLook& look, const cv::Point2d& light,
                SynthRng& rng) {
  std::vector<cv::Point> pts;
  for (const auto& q : part.poly) pts.push_back(fx(cv::Point2d(q.x, q.y)));
  const std::vector<std::vector<cv::Point>> polys = {pts};
  cv::fillPoly(img, polys, scale_color(look.shirt, 0.75), cv::LINE_AA, kShift);
  cv::fillPoly(mask, polys, cv::Scalar(255), cv::LINE_8, kShift);
  // Lighter inner panel shifted towards the light: a cylindrical shading cue.
  const cv::Point2d c = 0.5 * (part.a + part.b);
  std::vector<cv::Point> inner;
  for (const auto& q : part.poly) {
    const cv::Point2d p(q.x, q.y);
    inner.push_back(fx(c + 0.72 * (p - c) + light * (0.18 * part.r)));
  }
  cv::fillPoly(img, std::vector<std::vector<cv::Point>>{inner}, look.shirt, cv::LINE_AA, kShift);
  if (look.shirt_pattern == 0 || part.r < 2.0) return;
  // Texture clipped to the torso.
  cv::Rect box = cv::boundingRect(part.poly) & cv::Rect(0, 0, img.cols, img.rows);
  if (box.width < 2 || box.height < 2) return;
  cv::Mat roi = img(box), tex = roi.clone(), clip = cv::Mat::zeros(box.size(), CV_8U);
  std::vector<cv::Point> local;
  for (const auto& q : part.poly) local.push_back(fx(cv::Point2d(q.x - box.x, q.y - box.y)));
  cv::fillPoly(clip, std::vector<std::vector<cv::Point>>{local}, cv::Scalar(255), cv::LINE_8, kShift);
  const double step = std::max(2.0, part.r * rng.uniform(0.35, 0.6));
  const int th = std::max(1, int(std::lround(step * 0.4)));
  const cv::Point2d u = unit2(part.a - part.b, cv::Point2d(0, -1)), n(-u.y, u.x);
  const cv::Point2d o(part.b.x - box.x, part.b.y - box.y);
  const double len = std::hypot(box.width, box.height) + 2;
  if (look.shirt_pattern == 1 || look.shirt_pattern == 2) {
    const cv::Point2d along = look.shirt_pattern == 1 ? n : u, across = look.shirt_pattern == 1 ? u : n;
    for (double s = -len; s <= len; s += step)
      cv::line(tex, fx(o + across * s - along * len), fx(o + across * s + along * len), look.pattern, th, cv::LINE_AA,
               kShift);
  } else {
    for (double s = -len; s <= len; s += step)
      for (double t = -len; t <= len; t += step) {
        const cv::Point2d p = o + u * s + n * t;
        if (p.x < -2 || p.y < -2 || p.x > box.width + 2 || p.y > box.height + 2) continue;
        cv::circle(tex, fx(p), fr(std::max(0.6, step * 0.22)), look.pattern, -1, cv::LINE_AA, kShift);
      }
  }
  tex.copyTo(roi, clip);
}

void draw_head(cv::Mat& img, cv::Mat& mask, const Part& part, const Posed& posed, const PersonLook& look,
               const cv::Point2d& light) {
  const cv::Point2d C = part.a;
  const double R = part.r;
  const cv::Point2d F(posed.head_fwd_cam[0], posed.head_fwd_cam[1]);
  const cv::Point2d U(-posed.head_down_cam[0], -posed.head_down_cam[1]);
  const double fz = posed.head_fwd_cam[2];
  const double away = clampd(fz, 0.0, 1.0);
  cv::circle(mask, fx(C), fr(R), cv::Scalar(255), -1, cv::LINE_8, kShift);
  cv::circle(img, fx(C), fr(R), scale_color(look.skin, 0.8), -1, cv::LINE_AA, kShift);
  cv::circle(img, fx(C + light * (0.15 * R)), fr(0.8 * R), look.skin, -1, cv::LINE_AA, kShift);
  // Hair: a cap towards the top and the back of the head; covers all of it from behind.
  const cv::Point2d hc = C + U * ((0.28 - 0.2 * away) * R) - F * (0.3 * R);
  cv::circle(img, fx(hc), fr((0.9 + 0.1 * away) * R), look.hair, -1, cv::LINE_AA, kShift);
  cv::circle(mask, fx(hc), fr((0.9 + 0.1 * away) * R), cv::Scalar(255), -1, cv::LINE_8, kShift);
  if (fz < 0.2) {  // face skin towards the facing direction
    const cv::Point2d fc = C + F * (0.35 * R) - U * (0.15 * R);
    cv::circle(img, fx(fc), fr(0.68 * R), look.skin, -1, cv::LINE_AA, kShift);
  }
  const auto& kp = posed.kp;
  const cv::Point2d down = -U;
  for (int k = 3; k < 5; ++k) {  // ears
    if (!kp.labelable[k]) continue;
    const cv::Point2d e(kp.p[k].x, kp.p[k].y);
    cv::circle(img, fx(e), fr(std::max(0.7, 0.24 * R)), scale_color(look.skin, 0.7), -1, cv::LINE_AA, kShift);
    cv::circle(img, fx(e), fr(std::max(0.5, 0.16 * R)), look.skin, -1, cv::LINE_AA, kShift);
  }
  const cv::Scalar dark(25, 20, 20);
  for (int k = 1; k < 3; ++k) {  // eyes
    if (!kp.labelable[k]) continue;
    const cv::Point2d e(kp.p[k].x, kp.p[k].y);
    if (R >= 6) cv::circle(img, fx(e), fr(0.17 * R), cv::Scalar(235, 235, 235), -1, cv::LINE_AA, kShift);
    cv::circle(img, fx(e), fr(std::max(0.55, 0.1 * R)), dark, -1, cv::LINE_AA, kShift);
  }
  if (kp.labelable[0]) {  // nose and mouth
    const cv::Point2d n(kp.p[0].x, kp.p[0].y);
    cv::circle(img, fx(n), fr(std::max(0.5, 0.13 * R)), scale_color(look.skin, 0.62), -1, cv::LINE_AA, kShift);
    if (fz < -0.3 && R >= 4) {
      const cv::Point2d m = n + down * (0.38 * R);
      const cv::Point2d l = unit2(cv::Point2d(-down.y, down.x), cv::Point2d(1, 0));
      cv::line(img, fx(m - l * (0.22 * R)), fx(m + l * (0.22 * R)), cv::Scalar(60, 60, 150),
               std::max(1, int(std::lround(0.1 * R))), cv::LINE_AA, kShift);
    }
  }
}

// Draws a person (parts far to near) onto img and its body mask.
void draw_person(cv::Mat& img, cv::Mat& mask, const Posed& posed, const PersonLook& look, const cv::Point2d& light,
                 SynthRng& rng) {
  for (const Part& part : posed.parts) {
    if (part.id == kTorso)
      draw_torso(img, mask, part, look, light, rng);
    else if (part.id == kHead)
      draw_head(img, mask, part, posed, look, light);
    else
      draw_capsule(img, mask, part.a, part.b, part.r, part.color, light);
  }
}

// ------------------------------------------------------------------------------------------------
// Appearance and poses

cv::Scalar hsv_color(double h, double s, double v) {  // h in [0,360), s,v in [0,1] -> BGR 0..255
  const double c = v * s, hp = h / 60.0, x = c * (1 - std::fabs(std::fmod(hp, 2.0) - 1));
  double r = 0, g = 0, b = 0;
  if (hp < 1)
    r = c, g = x;
  else if (hp < 2)
    r = x, g = c;
  else if (hp < 3)
    g = c, b = x;
  else if (hp < 4)
    g = x, b = c;
  else if (hp < 5)
    r = x, b = c;
  else
    r = c, b = x;
  const double m = v - c;
  return cv::Scalar(255 * (b + m), 255 * (g + m), 255 * (r + m));
}

cv::Scalar jitter(SynthRng& rng, const cv::Scalar& c, double a) {
  return cv::Scalar(clampd(c[0] + rng.uniform(-a, a), 0, 255), clampd(c[1] + rng.uniform(-a, a), 0, 255),
                    clampd(c[2] + rng.uniform(-a, a), 0, 255));
}

PersonLook sample_look(SynthRng& rng) {
  static const cv::Scalar skins[] = {{195, 212, 245}, {160, 190, 232}, {125, 160, 210},
                                     {90, 125, 175},  {60, 90, 135},   {40, 60, 95}};
  static const cv::Scalar hairs[] = {{22, 20, 25}, {30, 50, 85}, {115, 180, 215}, {165, 165, 170}, {40, 75, 160}};
  static const cv::Scalar pants[] = {{130, 80, 40}, {35, 32, 30}, {120, 165, 185}, {105, 105, 105}, {60, 45, 30}};
  PersonLook L;
  L.skin = jitter(rng, skins[rng.uniform_int(0, 5)], 12);
  L.hair = jitter(rng, hairs[rng.uniform_int(0, 4)], 10);
  L.shirt = hsv_color(rng.uniform(0, 360), rng.uniform(0.15, 1.0), rng.uniform(0.25, 0.95));
  L.pants = rng.bernoulli(0.7) ? jitter(rng, pants[rng.uniform_int(0, 4)], 15)
                               : hsv_color(rng.uniform(0, 360), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.7));
  L.shoes = rng.bernoulli(0.75) ? jitter(rng, cv::Scalar(35, 35, 40), 20) : jitter(rng, cv::Scalar(225, 225, 225), 20);
  const int pat = rng.uniform_int(0, 6);
  L.shirt_pattern = pat <= 3 ? 0 : pat - 3;
  L.pattern = rng.bernoulli(0.5) ? scale_color(L.shirt, 0.45) : mix_color(L.shirt, cv::Scalar(245, 245, 245), 0.7);
  L.long_sleeves = rng.bernoulli(0.6);
  L.shorts = rng.bernoulli(0.25);
  return L;
}

// ------------------------------------------------------------------------------------------------
// Backgrounds, clutter and photometric effects

cv::Scalar random_color(SynthRng& rng) {
  return hsv_color(rng.uniform(0, 360), rng.uniform(0, 0.8), rng.uniform(0.15, 0.95));
}

void fill_gradient(cv::Mat& img, const cv::Rect& r, const cv::Scalar& c0, const cv::Scalar& c1, double angle) {
  const double ca = std::cos(angle), sa = std::sin(angle);
  const double ext = std::fabs(ca) * r.width + std::fabs(sa) * r.height + 1e-9;
  const double off = std::min(0.0, ca * r.width) + std::min(0.0, sa * r.height);
  for (int y = r.y; y < r.y + r.height; ++y) {
    auto* row = img.ptr<cv::Vec3b>(y);
    for (int x = r.x; x < r.x + r.width; ++x) {
      const double t = ((x - r.x) * ca + (y - r.y) * sa - off) / ext;
      for (int c = 0; c < 3; ++c) row[x][c] = cv::saturate_cast<uchar>(c0[c] + (c1[c] - c0[c]) * t);
    }
  }
}

void draw_distractor(cv::Mat& img, SynthRng& rng, double scale) {
  const int w = img.cols, h = img.rows;
  const cv::Point2d c(rng.uniform(0, w), rng.uniform(0, h));
  const int kind = rng.uniform_int(0, 3);
  cv::Mat dummy;    // capsules need a mask: draw into a throwaway one
  if (kind == 0) {  // skin-like blob
    static const cv::Scalar skins[] = {{160, 190, 232}, {90, 125, 175}, {125, 160, 210}};
    const cv::Scalar col = jitter(rng, skins[rng.uniform_int(0, 2)], 15);
    cv::ellipse(img, fx(c), cv::Size(fr(scale * rng.uniform(0.03, 0.12)), fr(scale * rng.uniform(0.03, 0.12))),
                rng.uniform(0, 180), 0, 360, col, -1, cv::LINE_AA, kShift);
  } else if (kind == 1) {  // limb-like stick chain
    dummy = cv::Mat::zeros(img.size(), CV_8U);
    const cv::Scalar col = random_color(rng);
    const double r = scale * rng.uniform(0.02, 0.05);
    cv::Point2d p = c;
    double a = rng.uniform(0, 2 * kPi);
    const int n = rng.uniform_int(1, 3);
    for (int i = 0; i < n; ++i) {
      const double len = scale * rng.uniform(0.1, 0.25);
      const cv::Point2d q = p + cv::Point2d(std::cos(a), std::sin(a)) * len;
      draw_capsule(img, dummy, p, q, r, col, cv::Point2d(-0.6, -0.8));
      p = q;
      a += rng.uniform(-1.5, 1.5);
    }
  } else if (kind == 2) {  // ball / head-like disc without a face
    const cv::Scalar col = random_color(rng);
    const double r = scale * rng.uniform(0.03, 0.09);
    cv::circle(img, fx(c), fr(r), scale_color(col, 0.75), -1, cv::LINE_AA, kShift);
    cv::circle(img, fx(c + cv::Point2d(-0.2, -0.2) * r), fr(0.7 * r), col, -1, cv::LINE_AA, kShift);
  } else {  // small bright object with a dark dot (eye-like false positives)
    const cv::Scalar col = random_color(rng);
    const double r = scale * rng.uniform(0.015, 0.04);
    cv::circle(img, fx(c), fr(r), col, -1, cv::LINE_AA, kShift);
    cv::circle(img, fx(c), fr(std::max(0.5, 0.35 * r)), cv::Scalar(20, 20, 20), -1, cv::LINE_AA, kShift);
  }
}

void draw_background(cv::Mat& img, SynthRng& rng, double clutter) {
  const int w = img.cols, h = img.rows;
  const int kind = rng.uniform_int(0, 2);
  if (kind == 0) {  // wall and floor
    const int hy = int(h * rng.uniform(0.3, 0.8));
    fill_gradient(img, cv::Rect(0, 0, w, hy), random_color(rng), random_color(rng), rng.uniform(1.2, 1.9));
    if (hy < h)
      fill_gradient(img, cv::Rect(0, hy, w, h - hy), random_color(rng), random_color(rng), rng.uniform(1.2, 1.9));
  } else {
    fill_gradient(img, cv::Rect(0, 0, w, h), random_color(rng), random_color(rng), rng.uniform(0, 2 * kPi));
  }
  // Low-frequency blotches.
  {
    const int gw = rng.uniform_int(2, 7), gh = rng.uniform_int(2, 6);
    const double amp = rng.uniform(5, 35);
    cv::Mat grid(gh, gw, CV_32FC3);
    for (int y = 0; y < gh; ++y)
      for (int x = 0; x < gw; ++x)
        for (int c = 0; c < 3; ++c) grid.at<cv::Vec3f>(y, x)[c] = float(rng.uniform(-amp, amp));
    cv::Mat big, img32;
    cv::resize(grid, big, img.size(), 0, 0, cv::INTER_CUBIC);
    img.convertTo(img32, CV_32FC3);
    img32 += big;
    img32.convertTo(img, CV_8UC3);
  }
  // Clutter: furniture, windows, posters, lines.
  int shapes = rng.uniform_int(2, 10);
  if (clutter != 1.0) shapes = int(std::lround(shapes * std::max(0.0, clutter)));
  const double s = std::max(w, h);
  for (int i = 0; i < shapes; ++i) {
    const cv::Scalar col = random_color(rng);
    const cv::Point2d c(rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h);
    const int kind2 = rng.uniform_int(0, 4);
    const int thick = rng.bernoulli(0.7) ? -1 : rng.uniform_int(1, 3);
    if (kind2 == 0 || kind2 == 1) {
      const cv::Point2d d(s * rng.uniform(0.05, 0.4), s * rng.uniform(0.05, 0.4));
      cv::rectangle(img, fx(c), fx(c + d), col, thick, cv::LINE_AA, kShift);
      if (thick < 0 && rng.bernoulli(0.3))  // a frame / shelf edge
        cv::rectangle(img, fx(c), fx(c + d), scale_color(col, 0.6), 1, cv::LINE_AA, kShift);
    } else if (kind2 == 2) {
      cv::ellipse(img, fx(c), cv::Size(fr(s * rng.uniform(0.02, 0.2)), fr(s * rng.uniform(0.02, 0.2))),
                  rng.uniform(0, 180), 0, 360, col, thick, cv::LINE_AA, kShift);
    } else if (kind2 == 3) {
      const cv::Point2d d(s * rng.uniform(-0.5, 0.5), s * rng.uniform(-0.5, 0.5));
      cv::line(img, fx(c), fx(c + d), col, rng.uniform_int(1, 3), cv::LINE_AA, kShift);
    } else {
      std::vector<cv::Point> poly;
      const int n = rng.uniform_int(3, 6);
      for (int k = 0; k < n; ++k)
        poly.push_back(fx(c + cv::Point2d(s * rng.uniform(-0.15, 0.15), s * rng.uniform(-0.15, 0.15))));
      cv::fillPoly(img, std::vector<std::vector<cv::Point>>{poly}, col, cv::LINE_AA, kShift);
    }
  }
  int distractors = rng.uniform_int(0, 3);
  if (clutter != 1.0) distractors = int(std::lround(distractors * std::max(0.0, clutter)));
  for (int i = 0; i < distractors; ++i) draw_distractor(img, rng, h * rng.uniform(0.5, 1.3));
}

// Lighting gradient, colour cast, brightness and sensor noise (in place).
void photometric(cv::Mat& img, SynthRng& rng) {
  const double g0 = rng.uniform(0.7, 1.2), gx = rng.uniform(-0.35, 0.35), gy = rng.uniform(-0.35, 0.35);
  const double cast[3] = {rng.uniform(0.88, 1.12), rng.uniform(0.9, 1.1), rng.uniform(0.88, 1.12)};
  const double offset = rng.uniform(-15, 15);
  const double sigma = rng.uniform(0, 7);
  uint64_t state = rng.next() | 1;
  auto u = [&state]() {  // xorshift64*, uniform in [-1, 1)
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return double((state * 0x2545F4914F6CDD1DULL) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
  };
  const double iw = 1.0 / img.cols, ih = 1.0 / img.rows;
  for (int y = 0; y < img.rows; ++y) {
    auto* row = img.ptr<cv::Vec3b>(y);
    for (int x = 0; x < img.cols; ++x) {
      const double g = g0 + gx * (x * iw - 0.5) + gy * (y * ih - 0.5);
      for (int c = 0; c < 3; ++c) {
        const double n = sigma > 0 ? sigma * (u() + u() + u()) : 0.0;  // variance sigma^2
        row[x][c] = cv::saturate_cast<uchar>(row[x][c] * g * cast[c] + offset + n);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Annotations

std::array<float, 4> to_bbox(const cv::Rect& r) { return {float(r.x), float(r.y), float(r.width), float(r.height)}; }

std::vector<std::vector<float>> mask_polygons(const cv::Mat& mask) {
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(mask.clone(), contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
  std::vector<std::vector<float>> polys;
  for (const auto& c : contours) {
    std::vector<cv::Point> a;
    cv::approxPolyDP(c, a, 0.6, true);
    if (a.size() < 3) continue;
    std::vector<float> flat;
    for (const auto& p : a) {
      flat.push_back(float(p.x) + 0.5f);
      flat.push_back(float(p.y) + 0.5f);
    }
    polys.push_back(std::move(flat));
  }
  return polys;
}

float round2(double v) { return float(std::round(v * 100.0) / 100.0); }

}  // namespace

// ------------------------------------------------------------------------------------------------
// Public API

BodyKeypoints pose_keypoints(const SynthPerson& person) { return pose_person(person).kp; }

BodyPose clamp_pose(BodyPose q) {
  q.torso_pitch = clampd(q.torso_pitch, deg(-15), deg(85));
  q.torso_side = clampd(q.torso_side, deg(-20), deg(20));
  q.torso_twist = clampd(q.torso_twist, deg(-35), deg(35));
  q.head_yaw = clampd(q.head_yaw, deg(-60), deg(60));
  q.head_pitch = clampd(q.head_pitch, deg(-40), deg(40));
  for (int i = 0; i < 2; ++i) {
    q.arm_elev[i] = clampd(q.arm_elev[i], 0, deg(175));
    q.arm_azim[i] = clampd(q.arm_azim[i], deg(-60), deg(135));
    q.elbow[i] = clampd(q.elbow[i], 0, deg(150));
    q.elbow_twist[i] = clampd(q.elbow_twist[i], deg(-90), deg(120));
    q.hip_flex[i] = clampd(q.hip_flex[i], deg(-30), deg(125));
    q.hip_abd[i] = clampd(q.hip_abd[i], deg(-10), deg(45));
    q.knee[i] = clampd(q.knee[i], 0, deg(150));
  }
  return q;
}

SynthPerson sample_person(SynthRng& r, double x, double y, double height, double max_yaw) {
  SynthPerson P;
  P.x = x;
  P.y = y;
  P.height = height;
  P.yaw = r.uniform(-max_yaw, max_yaw);
  P.roll = clampd(r.normal(0, deg(5)), deg(-18), deg(18));
  BodyPose& q = P.pose;
  q.torso_side = deg(r.uniform(-6, 6));
  q.torso_twist = deg(r.uniform(-15, 15));
  q.torso_pitch = deg(r.uniform(-5, 10));
  q.head_yaw = deg(r.uniform(-30, 30));
  q.head_pitch = deg(r.uniform(-15, 20));
  for (int i = 0; i < 2; ++i) {
    q.arm_elev[i] = deg(r.uniform(5, 30));
    q.arm_azim[i] = deg(r.uniform(-20, 70));
    q.elbow[i] = deg(r.uniform(0, 40));
    q.elbow_twist[i] = deg(r.uniform(-20, 40));
    q.hip_flex[i] = deg(r.uniform(-5, 8));
    q.hip_abd[i] = deg(r.uniform(0, 8));
    q.knee[i] = deg(r.uniform(0, 10));
  }
  const int kind = r.uniform_int(0, 9);
  const int a = r.uniform_int(0, 1);  // the "active" side
  switch (kind) {
    case 2: {  // walking
      const double s = r.uniform(10, 35);
      q.arm_elev[a] = deg(s), q.arm_azim[a] = deg(90), q.elbow[a] = deg(r.uniform(10, 40));
      q.arm_elev[1 - a] = deg(0.8 * s), q.arm_azim[1 - a] = deg(-90);
      q.hip_flex[1 - a] = deg(s), q.knee[1 - a] = deg(r.uniform(5, 25));
      q.hip_flex[a] = deg(-0.7 * s), q.knee[a] = deg(r.uniform(15, 45));
      break;
    }
    case 3:  // reaching
    case 4:
      for (int i = 0; i < 2; ++i)
        if (i == a || r.bernoulli(0.5)) {
          q.arm_elev[i] = deg(r.uniform(80, 170));
          q.arm_azim[i] = deg(r.uniform(-10, 100));
          q.elbow[i] = deg(r.uniform(0, 35));
        }
      q.torso_pitch = deg(r.uniform(-10, 25));
      break;
    case 5:  // waving
      q.arm_elev[a] = deg(r.uniform(60, 110)), q.arm_azim[a] = deg(r.uniform(-10, 40));
      q.elbow[a] = deg(r.uniform(70, 130)), q.elbow_twist[a] = deg(r.uniform(70, 110));
      break;
    case 6:  // arms out
      for (int i = 0; i < 2; ++i) {
        q.arm_elev[i] = deg(r.uniform(70, 105));
        q.arm_azim[i] = deg(r.uniform(-15, 25));
        q.elbow[i] = deg(r.uniform(0, 30));
      }
      break;
    case 7:  // sitting
      q.torso_pitch = deg(r.uniform(-10, 15));
      for (int i = 0; i < 2; ++i) {
        q.hip_flex[i] = deg(r.uniform(75, 100));
        q.hip_abd[i] = deg(r.uniform(0, 20));
        q.knee[i] = deg(r.uniform(70, 105));
        q.arm_elev[i] = deg(r.uniform(10, 40));
        q.arm_azim[i] = deg(r.uniform(40, 90));
        q.elbow[i] = deg(r.uniform(30, 90));
      }
      break;
    case 8:  // squatting
      q.torso_pitch = deg(r.uniform(15, 45));
      for (int i = 0; i < 2; ++i) {
        q.hip_flex[i] = deg(r.uniform(90, 120));
        q.hip_abd[i] = deg(r.uniform(5, 30));
        q.knee[i] = deg(r.uniform(100, 140));
        q.arm_elev[i] = deg(r.uniform(30, 80));
        q.arm_azim[i] = deg(r.uniform(60, 100));
        q.elbow[i] = deg(r.uniform(20, 90));
      }
      break;
    case 9: {  // bending forward, arms hanging, looking ahead
      const double p = r.uniform(35, 75);
      q.torso_pitch = deg(p);
      q.head_pitch = deg(-r.uniform(15, 35));
      for (int i = 0; i < 2; ++i) {
        q.arm_elev[i] = deg(p + r.uniform(-15, 15));
        q.arm_azim[i] = deg(r.uniform(70, 100));
        q.elbow[i] = deg(r.uniform(0, 30));
      }
      break;
    }
    default:  // standing (kinds 0, 1)
      break;
  }
  q = clamp_pose(q);
  P.look = sample_look(r);
  return P;
}

SynthScene sample_scene(const SynthConfig& cfg, uint64_t image_seed) {
  SynthRng rng(image_seed);
  SynthScene sc;
  sc.width = cfg.width_max > cfg.width ? rng.uniform_int(cfg.width, cfg.width_max) : cfg.width;
  sc.height = cfg.height_max > cfg.height ? rng.uniform_int(cfg.height, cfg.height_max) : cfg.height;
  sc.style_seed = rng.next();
  sc.clutter = cfg.clutter;
  const double w = sc.width, h = sc.height;
  const int n = rng.uniform_int(cfg.min_people, cfg.max_people);
  std::vector<std::pair<double, SynthPerson>> people;
  for (int i = 0; i < n; ++i) {
    const double H = h * std::exp(rng.uniform(std::log(cfg.min_scale), std::log(cfg.max_scale)));
    const double lo = std::min(-0.1 * H, h - 0.9 * H), hi = std::max(-0.1 * H, h - 0.9 * H);
    const double top = rng.uniform(lo, hi);
    const double x = rng.uniform(-0.05 * w, 1.05 * w);
    SynthPerson p = sample_person(rng, x, top + 0.52 * H, H, cfg.max_yaw);
    people.emplace_back(H * rng.uniform(0.85, 1.15), p);
  }
  std::stable_sort(people.begin(), people.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& p : people) sc.people.push_back(p.second);
  if (rng.bernoulli(cfg.crowd_rate)) {
    const int k = rng.uniform_int(5, 12);
    const double hc = h * rng.uniform(0.12, 0.22);
    const double spread = hc * rng.uniform(0.8, 2.0);
    const double cx = rng.uniform(0.15, 0.85) * w, cy = rng.uniform(0.3, 0.7) * h;
    std::vector<SynthPerson> group;
    for (int i = 0; i < k; ++i) {
      const double Hm = hc * rng.uniform(0.85, 1.15);
      group.push_back(sample_person(rng, cx + rng.uniform(-1, 1) * spread, cy + rng.uniform(-0.3, 0.3) * hc, Hm));
    }
    std::stable_sort(group.begin(), group.end(), [](const auto& a, const auto& b) { return a.y < b.y; });
    sc.crowds.push_back(std::move(group));
  }
  if (rng.bernoulli(cfg.occluder_rate)) {
    SynthOccluder o;
    const double ow = w * rng.uniform(0.15, 0.5), oh = h * rng.uniform(0.1, 0.4);
    const double ox = rng.uniform(-0.1 * w, w - 0.5 * ow);
    const double oy = rng.bernoulli(0.6) ? h - oh + rng.uniform(0, 0.1 * h) : rng.uniform(0, h - oh);
    o.box = cv::Rect2d(ox, oy, ow, oh);
    o.ellipse = rng.bernoulli(0.3);
    o.color = random_color(rng);
    sc.occluders.push_back(o);
  }
  sc.blur_sigma = rng.bernoulli(cfg.blur_rate) ? rng.uniform(0.4, 1.2) : 0.0;
  return sc;
}

SynthImage render_scene(const SynthScene& sc) {
  SynthRng rng(sc.style_seed);
  SynthImage out;
  const int w = sc.width, h = sc.height;
  out.image = cv::Mat(h, w, CV_8UC3, cv::Scalar(128, 128, 128));
  if (!sc.plain_background) draw_background(out.image, rng, sc.clutter);
  const cv::Point2d light = unit2(cv::Point2d(rng.uniform(-1, 1), -1.0), cv::Point2d(0, -1));

  // Crowds: small unlabelled people behind everybody, one iscrowd=1 region per group.
  for (const auto& group : sc.crowds) {
    cv::Mat mask = cv::Mat::zeros(h, w, CV_8U);
    for (const auto& p : group) draw_person(out.image, mask, pose_person(p), p.look, light, rng);
    std::vector<cv::Point> pts, hull;
    cv::findNonZero(mask, pts);
    if (pts.size() < 3) continue;
    cv::convexHull(pts, hull);
    if (hull.size() < 3) continue;
    CocoPerson c;
    c.iscrowd = true;
    std::vector<float> flat;
    for (const auto& q : hull) {
      flat.push_back(float(q.x) + 0.5f);
      flat.push_back(float(q.y) + 0.5f);
    }
    c.segmentation.polygons.push_back(flat);
    c.area = float(cv::countNonZero(mask));
    c.bbox = to_bbox(cv::boundingRect(hull) & cv::Rect(0, 0, w, h));
    out.crowds.push_back(c);
  }

  // People, far to near.
  std::vector<Posed> posed;
  for (const auto& p : sc.people) {
    posed.push_back(pose_person(p));
    out.masks.push_back(cv::Mat::zeros(h, w, CV_8U));
    draw_person(out.image, out.masks.back(), posed.back(), p.look, light, rng);
  }
  cv::Mat front = cv::Mat::zeros(h, w, CV_8U);  // what covers the person being annotated
  for (const auto& o : sc.occluders) {
    const cv::Point2d c(o.box.x + o.box.width / 2, o.box.y + o.box.height / 2);
    for (int pass = 0; pass < 2; ++pass) {
      cv::Mat& dst = pass == 0 ? out.image : front;
      const cv::Scalar col = pass == 0 ? o.color : cv::Scalar(255);
      const int aa = pass == 0 ? cv::LINE_AA : cv::LINE_8;
      if (o.ellipse)
        cv::ellipse(dst, fx(c), cv::Size(fr(o.box.width / 2), fr(o.box.height / 2)), 0, 0, 360, col, -1, aa, kShift);
      else
        cv::rectangle(dst, fx(o.box.tl()), fx(o.box.br()), col, -1, aa, kShift);
    }
    if (o.box.height > 6)  // a top edge highlight
      cv::line(out.image, fx(o.box.tl()), fx(cv::Point2d(o.box.br().x, o.box.y)), scale_color(o.color, 1.3), 1,
               cv::LINE_AA, kShift);
  }

  // Annotations, nearest first so `front` accumulates the nearer bodies.
  std::vector<std::pair<int, CocoPerson>> anns;
  for (int i = int(sc.people.size()) - 1; i >= 0; --i) {
    const Posed& ps = posed[i];
    cv::Mat visible = out.masks[i] & ~front;
    CocoPerson a;
    cv::Rect box;
    const int area = cv::countNonZero(visible);
    if (area > 0) box = cv::boundingRect(visible);
    for (int k = 0; k < 17; ++k) {
      const double x = ps.kp.p[k].x, y = ps.kp.p[k].y;
      const bool inside = x >= 0 && y >= 0 && x < w && y < h;
      int v = 0;
      if (inside && ps.kp.labelable[k]) {
        const int px = int(std::floor(x)), py = int(std::floor(y));
        v = (ps.self_occluded[k] || front.at<uchar>(py, px)) ? 1 : 2;
        const cv::Rect cell(px, py, 1, 1);
        box = box.area() > 0 ? (box | cell) : cell;
        a.keypoints[3 * k] = std::max(0.01f, std::min(float(w) - 0.01f, round2(x)));
        a.keypoints[3 * k + 1] = std::max(0.01f, std::min(float(h) - 0.01f, round2(y)));
        a.keypoints[3 * k + 2] = float(v);
        ++a.num_keypoints;
      }
    }
    front |= out.masks[i];
    if (area < 6) continue;  // (almost) invisible: not annotated
    a.bbox = to_bbox(box);
    a.area = float(area);
    a.segmentation.polygons = mask_polygons(visible);
    anns.emplace_back(i, a);
  }
  std::reverse(anns.begin(), anns.end());
  for (auto& [i, a] : anns) {
    out.person_index.push_back(i);
    out.persons.push_back(std::move(a));
  }

  if (!sc.plain_background) {
    if (sc.blur_sigma > 0) cv::GaussianBlur(out.image, out.image, cv::Size(0, 0), sc.blur_sigma);
    photometric(out.image, rng);
  }
  return out;
}

SynthImage generate_synth_image(const SynthConfig& cfg, int index) {
  const uint64_t seed = synth_mix(cfg.seed ^ synth_mix(uint64_t(index) + 0x51ED2701ULL));
  return render_scene(sample_scene(cfg, seed));
}

}  // namespace posekd::data
