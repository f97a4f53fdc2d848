#include "posekd/data/sample.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>

#include "posekd/core/error.h"
#include "posekd/core/skeleton.h"
#include "posekd/data/keypoints.h"
#include "posekd/data/targets.h"

namespace posekd::data {
namespace fs = std::filesystem;

namespace {

uint32_t be16(const unsigned char* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t be32(const unsigned char* p) { return (be16(p) << 16) | be16(p + 2); }

bool is_jpeg(const std::string& b) {
  return b.size() >= 3 && static_cast<unsigned char>(b[0]) == 0xFF && static_cast<unsigned char>(b[1]) == 0xD8 &&
         static_cast<unsigned char>(b[2]) == 0xFF;
}

// Offset of the first start-of-scan (FF DA) marker, found by walking the marker segments; 0 if none.
size_t jpeg_scan_start(const std::string& b) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  size_t i = 2, n = b.size();
  while (i + 4 <= n) {
    if (p[i] != 0xFF) return 0;
    unsigned char m = p[i + 1];
    if (m == 0xFF) {
      ++i;
      continue;
    }
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
      i += 2;
      continue;
    }
    if (m == 0xDA) return i;
    if (m == 0xD9) return 0;
    i += 2 + ((static_cast<size_t>(p[i + 2]) << 8) | p[i + 3]);
  }
  return 0;
}

// A complete JPEG has a scan and ends with the EOI marker (FF D9), possibly followed by a little
// padding. FF D9 cannot occur inside entropy-coded data (0xFF is stuffed), so its absence after the
// scan start, near the end of the file, means the file was truncated.
bool jpeg_complete(const std::string& b) {
  size_t sos = jpeg_scan_start(b);
  if (sos == 0) return false;
  size_t start = std::max(sos + 2, b.size() > 4096 ? b.size() - 4096 : size_t(0));
  for (size_t i = b.size(); i-- > start + 1;)
    if (static_cast<unsigned char>(b[i - 1]) == 0xFF && static_cast<unsigned char>(b[i]) == 0xD9) return true;
  return false;
}

struct Fail {
  std::string msg;
};

// Resizes `img` to nw x nh (bilinear), pads it to S x S with 128 and converts it to the network input.
// An S x S 8-bit BGR canvas -> [3, S, S] f32, (x - 128) / 128.
torch::Tensor canvas_to_input(const cv::Mat& canvas) {
  const int S = canvas.rows;
  torch::Tensor t = torch::empty({3, S, S}, torch::kFloat32);
  float* o = t.data_ptr<float>();
  const int plane = S * S;
  for (int y = 0; y < S; ++y) {
    const uint8_t* row = canvas.ptr<uint8_t>(y);
    for (int x = 0; x < S; ++x)
      for (int c = 0; c < 3; ++c) o[c * plane + y * S + x] = (static_cast<float>(row[3 * x + c]) - 128.f) / 128.f;
  }
  return t;
}

// Resized to nw x nh, pasted at the top-left of a grey S x S canvas.
torch::Tensor letterbox_input(const cv::Mat& img, int S, int nw, int nh) {
  cv::Mat resized;
  cv::resize(img, resized, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
  cv::Mat canvas(S, S, CV_8UC3, cv::Scalar(128, 128, 128));
  const cv::Rect r(0, 0, std::min(nw, S), std::min(nh, S));
  resized(r).copyTo(canvas(r));
  return canvas_to_input(canvas);
}

}  // namespace

torch::Tensor prepare_input(const cv::Mat& bgr, int input_size, double* scale) {
  if (bgr.empty()) throw Error("prepare_input: empty image");
  if (bgr.type() != CV_8UC3) throw Error("prepare_input: expected an 8-bit 3-channel (BGR) image");
  if (input_size <= 0) throw Error("prepare_input: input size must be positive");
  const int w = bgr.cols, h = bgr.rows;
  const double s = static_cast<double>(input_size) / std::max(h, w);
  if (scale) *scale = s;
  return letterbox_input(bgr, input_size, std::max(1, static_cast<int>(w * s)), std::max(1, static_cast<int>(h * s)));
}

bool image_header_size(const std::string& bytes, int& width, int& height) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 24 && std::equal(png_sig, png_sig + 8, p) && std::equal(p + 12, p + 16, "IHDR")) {
    uint32_t w = be32(p + 16), h = be32(p + 20);
    if (w == 0 || h == 0 || w > 0x7fffffff || h > 0x7fffffff) return false;
    width = static_cast<int>(w);
    height = static_cast<int>(h);
    return true;
  }
  if (!is_jpeg(bytes)) return false;
  size_t i = 2;
  while (i + 4 <= n) {
    if (p[i] != 0xFF) return false;
    unsigned char m = p[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // no length
      i += 2;
      continue;
    }
    if (m == 0xD9 || m == 0xDA) return false;  // end / scan before any frame header
    uint32_t len = be16(p + i + 2);
    if (len < 2) return false;
    bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (i + 9 > n) return false;
      height = static_cast<int>(be16(p + i + 5));
      width = static_cast<int>(be16(p + i + 7));
      return width > 0 && height > 0;
    }
    i += 2 + len;
  }
  return false;
}

Sample prepare_sample(const CocoImage& image, const std::string& image_dir, const SampleConfig& cfg,
                      const AugmentParams* aug) {
  Sample s;
  s.image_id = image.id;
  const std::string path = (fs::path(image_dir) / image.file_name).string();
  try {
    if (cfg.input_size <= 0 || cfg.stride <= 0 || cfg.input_size % cfg.stride != 0)
      throw Fail{"input_size must be a positive multiple of stride"};
    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      if (!in) throw Fail{"cannot open image file"};
      in.seekg(0, std::ios::end);
      const std::streamoff n = in.tellg();
      if (n < 0) throw Fail{"cannot read image file (not a regular file?)"};
      if (n > (std::streamoff(1) << 31)) throw Fail{"image file larger than 2 GB"};
      bytes.resize(static_cast<size_t>(n));
      in.seekg(0);
      if (n > 0 && !in.read(bytes.data(), n)) throw Fail{"cannot read image file"};
    }
    if (bytes.empty()) throw Fail{"empty image file"};
    int hw = 0, hh = 0;
    const bool have_header = image_header_size(bytes, hw, hh);
    if (have_header && (hw > cfg.max_side || hh > cfg.max_side))
      throw Fail{fmt::format("image too large ({}x{}, limit {} per side)", hw, hh, cfg.max_side)};
    const bool jpeg = is_jpeg(bytes);
    if (jpeg && !jpeg_complete(bytes)) throw Fail{"truncated or corrupt JPEG (no scan or no end-of-image marker)"};

    int factor = 1;
    if (cfg.reduced_decode && jpeg && have_header) {
      const int longest = std::max(hw, hh);
      for (int f : {8, 4, 2})
        if (longest >= f * cfg.input_size) {
          factor = f;
          break;
        }
    }
    const int flags = factor == 8   ? cv::IMREAD_REDUCED_COLOR_8
                      : factor == 4 ? cv::IMREAD_REDUCED_COLOR_4
                      : factor == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                    : cv::IMREAD_COLOR;
    cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U, bytes.data());
    cv::Mat img = cv::imdecode(raw, flags);
    if (img.empty()) throw Fail{"cannot decode image (corrupt or not an image)"};
    if (img.depth() != CV_8U) {
      cv::Mat c;
      img.convertTo(c, CV_8U, img.depth() == CV_16U ? 1.0 / 256 : 1.0);
      img = c;
    }
    if (img.channels() == 1) cv::cvtColor(img, img, cv::COLOR_GRAY2BGR);
    if (img.channels() == 4) cv::cvtColor(img, img, cv::COLOR_BGRA2BGR);
    if (img.channels() != 3) throw Fail{"unsupported number of image channels"};

    // Original size: the decoded image's; with a reduced decode, the header's (swapped if the
    // decoder applied an EXIF rotation).
    int w = img.cols, h = img.rows;
    if (factor > 1) {
      w = hw;
      h = hh;
      const int rw = (hw + factor - 1) / factor, rh = (hh + factor - 1) / factor;
      if (img.cols == rh && img.rows == rw && rw != rh) std::swap(w, h);
    }
    if (w > cfg.max_side || h > cfg.max_side)
      throw Fail{fmt::format("image too large ({}x{}, limit {} per side)", w, h, cfg.max_side)};

    const int S = cfg.input_size;
    TargetGrid g;
    g.grid_w = g.grid_h = S / cfg.stride;
    g.stride = cfg.stride;
    g.sigma = cfg.sigma;
    double scale = static_cast<double>(S) / std::max(h, w);
    cv::Mat affine;  // original pixels -> input pixels, with augmentation
    if (aug != nullptr) {
      affine = augment_affine(*aug, w, h, S);
      scale *= aug->scale;
      // Decoded pixels are (fx, fy) original pixels (reduced decode); pixel centres map as
      // orig = (dec + 0.5) * f - 0.5.
      const double fx = static_cast<double>(w) / img.cols, fy = static_cast<double>(h) / img.rows;
      cv::Mat dec = cv::Mat::zeros(3, 3, CV_64F);
      dec.at<double>(0, 0) = fx;
      dec.at<double>(0, 2) = 0.5 * fx - 0.5;
      dec.at<double>(1, 1) = fy;
      dec.at<double>(1, 2) = 0.5 * fy - 0.5;
      dec.at<double>(2, 2) = 1;
      const cv::Mat m_dec = affine * dec;
      photometric(img, *aug, aug->blur_sigma / (scale * fx));
      cv::Mat canvas;
      cv::warpAffine(img, canvas, m_dec, cv::Size(S, S), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                     cv::Scalar(128, 128, 128));
      s.image = canvas_to_input(canvas);
    } else {
      const int nw = std::max(1, static_cast<int>(w * scale)), nh = std::max(1, static_cast<int>(h * scale));
      s.image = letterbox_input(img, S, nw, nh);
      s.mask = crowd_mask(image.crowds, h, w, nh, nw, g);
    }

    std::vector<Keypoints18> persons;
    persons.reserve(image.persons.size());
    for (const auto& p : image.persons) {
      const Keypoints18 kp = cfg.seed_compat_targets ? seed_compat_keypoints(p) : convert_keypoints(p, w, h);
      persons.push_back(aug != nullptr ? transform_keypoints(kp, affine, aug->flip) : scale_keypoints(kp, scale));
    }
    s.heatmaps = heatmaps(persons, g);
    s.pafs = pafs(persons, g);
    if (aug != nullptr) s.mask = crowd_mask_affine(image.crowds, h, w, affine, g);
    s.scale = scale;
    s.ok = true;
  } catch (const Fail& f) {
    s.error = path + ": " + f.msg;
  } catch (const cv::Exception& e) {
    s.error = path + ": cannot decode image (" + std::string(e.err.empty() ? "OpenCV error" : e.err) + ")";
  } catch (const std::exception& e) {
    s.error = path + ": " + e.what();
  } catch (...) {
    s.error = path + ": unknown error while preparing the sample";
  }
  if (!s.ok) {
    for (char& c : s.error)
      if (c == '\n' || c == '\r') c = ' ';
    s.image = torch::Tensor();
    s.heatmaps = s.pafs = s.mask = torch::Tensor();
  }
  return s;
}

torch::Tensor fold_input(const torch::Tensor& x, int f) {
  if (x.dim() != 4) throw Error("fold_input: expected a [B,C,H,W] tensor");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (f < 1 || H % f != 0 || W % f != 0) throw Error("fold_input: H and W must be divisible by the fold factor");
  // [B, C, H/f, i, W/f, j] -> [B, i, j, C, H/f, W/f]
  return x.reshape({B, C, H / f, f, W / f, f}).permute({0, 3, 5, 1, 2, 4}).reshape({B, f * f * C, H / f, W / f});
}

}  // namespace posekd::data
