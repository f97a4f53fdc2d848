// `posekd predict SOURCE... --checkpoint F | --teacher F -o DIR`: decodes the people in images,
// folders of images, glob patterns, video files and cameras, draws their skeletons
// (DIR/<stem>_pose.jpg per image, DIR/<stem>_pose.avi per video, DIR/camera<N>_pose.avi per camera)
// and writes DIR/poses.json:
//   {"images": [{"file", "output", "width", "height", "persons": [PERSON...]}, ...],
//    "videos": [{"file", "output", "fps", "width", "height", "frames": [{"frame", "persons"}...]}, ...],
//    "unreadable": [{"file", "error"}]}
//   PERSON = {"keypoints": [51, COCO x,y,v], "keypoint_scores": [17], "score"}
#include <glob.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>

#include "posekd/cli/registry.h"
#include "posekd/core/error.h"
#include "posekd/core/precision.h"
#include "posekd/core/threads.h"
#include "posekd/infer/draw.h"
#include "posekd/infer/evaluate.h"
#include "posekd/train/checkpoint.h"

namespace posekd::cli::cmd_predict {  // named: the commands share unity-build translation units
namespace {

namespace fs = std::filesystem;
namespace inf = posekd::infer;
using nlohmann::json;

struct Opts {
  std::vector<std::string> sources;
  std::string checkpoint, teacher, output, arch = "seed";
  std::string precision = "auto";
  bool int8 = false;
  int threads = 0;
  int batch_size = 8;
  double score_threshold = 0;
  int64_t max_frames = 0;
};

struct Source {
  enum Kind { Image, Video, Camera } kind = Image;
  std::string path;  // file, or "camera N"
  int camera = -1;
};

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e;
}

bool is_image_ext(const std::string& e) {
  static const std::set<std::string> k = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"};
  return k.count(e) > 0;
}

bool is_video_ext(const std::string& e) {
  static const std::set<std::string> k = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"};
  return k.count(e) > 0;
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 4 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

void add_file(std::vector<Source>& out, const std::string& path) {
  Source s;
  s.path = path;
  s.kind = is_video_ext(lower_ext(path)) ? Source::Video : Source::Image;
  out.push_back(s);
}

// Files, folders (their images and videos, sorted), glob patterns and camera indices, in the order
// given. A pattern without a match is reported in `missing`.
std::vector<Source> expand_sources(const std::vector<std::string>& args, std::vector<std::string>* missing) {
  std::vector<Source> out;
  for (const auto& a : args) {
    std::error_code ec;
    if (fs::is_directory(a, ec)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(a, ec)) {
        const std::string ext = lower_ext(e.path());
        if (e.is_regular_file(ec) && (is_image_ext(ext) || is_video_ext(ext))) files.push_back(e.path().string());
      }
      std::sort(files.begin(), files.end());
      if (files.empty()) missing->push_back(a + ": no image or video in this folder");
      for (const auto& f : files) add_file(out, f);
    } else if (!fs::exists(a, ec) && a.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      const int rc = ::glob(a.c_str(), 0, nullptr, &g);
      std::vector<std::string> files;
      if (rc == 0)
        for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
      if (files.empty()) missing->push_back(a + ": no file matches this pattern");
      for (const auto& f : files) add_file(out, f);  // glob sorts
    } else if (all_digits(a) && !fs::exists(a, ec)) {
      Source s;
      s.kind = Source::Camera;
      s.camera = std::stoi(a);
      s.path = "camera " + a;
      out.push_back(s);
    } else {
      add_file(out, a);
    }
  }
  return out;
}

json persons_json(const std::vector<inf::Pose>& poses) {
  json persons = json::array();
  for (const auto& p : poses) {
    const auto ks = inf::coco_keypoint_scores(p);
    persons.push_back({{"keypoints", std::vector<float>(p.keypoints.begin(), p.keypoints.end())},
                       {"keypoint_scores", std::vector<float>(ks.begin(), ks.end())},
                       {"score", p.score}});
  }
  return persons;
}

void keep_confident(std::vector<inf::Pose>& poses, double threshold) {
  if (threshold <= 0) return;
  poses.erase(std::remove_if(poses.begin(), poses.end(), [&](const inf::Pose& p) { return p.score < threshold; }),
              poses.end());
}

// A free output name DIR/<stem><suffix> (stem_2, stem_3, ... when two inputs share a stem).
std::string output_name(const fs::path& dir, const std::string& stem, const std::string& suffix,
                        std::set<std::string>& used) {
  std::string name = stem + suffix;
  for (int k = 2; used.count(name); ++k) name = stem + "_" + std::to_string(k) + suffix;
  used.insert(name);
  return (dir / name).string();
}

volatile std::sig_atomic_t g_predict_stop = 0;
void predict_on_signal(int) { g_predict_stop = 1; }

struct Run {
  const Opts& o;
  inf::EvalConfig cfg;
  inf::PredictFn predict;
  json images = json::array(), videos = json::array(), unreadable = json::array();
  std::set<std::string> used;
  int written = 0;

  void fail(const std::string& file, const std::string& msg) {
    std::fprintf(stderr, "warning: %s\n", msg.c_str());
    unreadable.push_back({{"file", file}, {"error", msg}});
  }

  void run_images(const std::vector<Source>& files) {
    std::vector<posekd::data::CocoImage> ims(files.size());
    for (size_t k = 0; k < files.size(); ++k) {
      ims[k].id = static_cast<int64_t>(k);
      ims[k].file_name = files[k].path;
    }
    // The whole list in batches of --batch-size (predict_images batches; decoding runs in parallel).
    auto preds = inf::predict_images(ims, "", predict, cfg);
    for (size_t k = 0; k < files.size(); ++k) {
      const std::string& path = files[k].path;
      if (!preds[k].ok) {
        fail(path, preds[k].error);
        continue;
      }
      cv::Mat img = cv::imread(path, cv::IMREAD_COLOR);
      if (img.empty()) {
        fail(path, path + ": cannot read the image for drawing");
        continue;
      }
      auto& poses = preds[k].poses;
      keep_confident(poses, o.score_threshold);
      const std::string dst = output_name(o.output, fs::path(path).stem().string(), "_pose.jpg", used);
      if (!cv::imwrite(dst, inf::draw_poses(img, poses))) posekd::fail_file(dst, "cannot write the image");
      ++written;
      images.push_back({{"file", path},
                        {"output", dst},
                        {"width", img.cols},
                        {"height", img.rows},
                        {"persons", persons_json(poses)}});
      std::fprintf(stderr, "predict: %s: %zu people -> %s\n", path.c_str(), poses.size(), dst.c_str());
    }
  }

  void run_stream(const Source& src) {
    cv::VideoCapture cap;
    const bool opened = src.kind == Source::Camera ? cap.open(src.camera) : cap.open(src.path);
    if (!opened || !cap.isOpened()) {
      fail(src.path, src.path + (src.kind == Source::Camera ? ": cannot open the camera" : ": cannot open the video"));
      return;
    }
    double fps = cap.get(cv::CAP_PROP_FPS);
    if (!(fps > 0 && fps < 1000)) fps = 30;
    const std::string stem =
        src.kind == Source::Camera ? "camera" + std::to_string(src.camera) : fs::path(src.path).stem().string();
    const std::string dst = output_name(o.output, stem, "_pose.avi", used);
    cv::VideoWriter writer;
    json frames = json::array();
    int64_t n = 0;
    int width = 0, height = 0;
    auto flush = [&](std::vector<cv::Mat>& batch) {
      if (batch.empty()) return;
      auto poses = inf::predict_frames(batch, predict, cfg);
      for (size_t i = 0; i < batch.size(); ++i) {
        keep_confident(poses[i], o.score_threshold);
        writer.write(inf::draw_poses(batch[i], poses[i]));
        frames.push_back({{"frame", n - static_cast<int64_t>(batch.size()) + static_cast<int64_t>(i)},
                          {"persons", persons_json(poses[i])}});
      }
      batch.clear();
    };
    std::vector<cv::Mat> batch;
    g_predict_stop = 0;
    auto old_int = std::signal(SIGINT, predict_on_signal);
    auto old_term = std::signal(SIGTERM, predict_on_signal);
    cv::Mat frame;
    while (!g_predict_stop && (o.max_frames <= 0 || n < o.max_frames) && cap.read(frame) && !frame.empty()) {
      if (frame.type() != CV_8UC3) {
        fail(src.path, src.path + ": frame " + std::to_string(n) + " is not an 8-bit colour image");
        break;
      }
      if (!writer.isOpened()) {
        width = frame.cols;
        height = frame.rows;
        if (!writer.open(dst, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps, frame.size()))
          posekd::fail_file(dst, "cannot write the video");
      }
      if (frame.size() != cv::Size(width, height)) {
        fail(src.path, src.path + ": frame " + std::to_string(n) + " changes the frame size");
        break;
      }
      batch.push_back(frame.clone());
      ++n;
      if (static_cast<int>(batch.size()) >= std::max(1, o.batch_size)) flush(batch);
    }
    flush(batch);
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
    if (n == 0) {
      fail(src.path, src.path + ": no frame could be read");
      return;
    }
    writer.release();
    ++written;
    videos.push_back(
        {{"file", src.path}, {"output", dst}, {"fps", fps}, {"width", width}, {"height", height}, {"frames", frames}});
    std::fprintf(stderr, "predict: %s: %lld frames -> %s\n", src.path.c_str(), static_cast<long long>(n), dst.c_str());
  }
};

int run(const Opts& o) {
  using posekd::Error;
  posekd::set_compute_threads(o.threads);
  const posekd::Precision prec = posekd::resolve_precision(o.precision);
  if (o.checkpoint.empty() == o.teacher.empty())
    throw Error("predict: give exactly one of --checkpoint FILE or --teacher FILE");
  if (o.int8 && o.checkpoint.empty()) throw Error("predict: --int8 needs --checkpoint (a QAT student checkpoint)");
  if (o.batch_size < 1) throw Error("predict: --batch-size must be at least 1");
  for (const auto& f : {o.checkpoint, o.teacher})
    if (!f.empty() && !fs::exists(f)) posekd::fail_file(f, "file not found");

  Run r{o};
  if (!o.teacher.empty()) {
    const auto teacher = posekd::model::load_teacher(o.teacher);  // the size and scale its file says
    r.cfg = inf::teacher_eval_config(teacher.info);
    r.predict = inf::teacher_predictor(teacher, prec);
  } else {
    auto student = posekd::train::load_student(o.checkpoint, o.arch);
    r.predict = o.int8 ? inf::int8_predictor(*student, o.checkpoint) : inf::student_predictor(student, prec);
  }
  r.cfg.batch_size = o.batch_size;

  std::error_code ec;
  fs::create_directories(o.output, ec);
  if (!fs::is_directory(o.output)) posekd::fail_file(o.output, "cannot create the output directory");

  std::vector<std::string> missing;
  const auto sources = expand_sources(o.sources, &missing);
  for (const auto& m : missing) r.fail(m.substr(0, m.find(": ")), m);
  std::vector<Source> files;
  for (const auto& s : sources)
    if (s.kind == Source::Image) files.push_back(s);
  if (!files.empty()) r.run_images(files);
  for (const auto& s : sources)
    if (s.kind != Source::Image) r.run_stream(s);

  const fs::path json_path = fs::path(o.output) / "poses.json";
  {
    std::ofstream f(json_path);
    if (!f) posekd::fail_file(json_path.string(), "cannot write");
    f << json{{"images", r.images}, {"videos", r.videos}, {"unreadable", r.unreadable}}.dump(1) << "\n";
    if (!f) posekd::fail_file(json_path.string(), "write failed");
  }
  std::fprintf(stderr, "predict: wrote %d image(s)/video(s) and %s\n", r.written, json_path.string().c_str());
  if (r.written == 0) throw Error("predict: no image or video could be read");
  return 0;
}

posekd::cli::Registration reg(
    "predict", "Draw the detected skeletons over images, folders, videos or a camera and write their keypoints as JSON",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<Opts>();
      app.add_option("sources", o->sources,
                     "images, folders of images, glob patterns ('frames/*.jpg'), video files, or a camera index (0)")
          ->required();
      app.add_option("--checkpoint", o->checkpoint, "student checkpoint (posekd, seed or ai8x; float or QAT)");
      app.add_flag("--int8", o->int8, "integer (MAX78000) inference of the QAT checkpoint");
      app.add_option("--arch", o->arch, "student arch when the checkpoint does not name one")->capture_default_str();
      app.add_option("--teacher", o->teacher, "teacher checkpoint (legacy or zip torch.save)");
      app.add_option("-o,--output", o->output, "output directory")->required();
      app.add_option("--score-threshold", o->score_threshold,
                     "drop people whose score (the COCO person score in poses.json) is below this")
          ->capture_default_str();
      app.add_option("--batch-size", o->batch_size, "images or frames per network call")->capture_default_str();
      app.add_option("--max-frames", o->max_frames,
                     "stop each video or camera after N frames (0 = all; Ctrl-C stops a camera)")
          ->capture_default_str();
      app.add_option("--threads", o->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_option("--precision", o->precision,
                     "float inference arithmetic: auto (bf16 where the CPU has bf16 units), fp32 or bf16")
          ->capture_default_str();
      return [o]() { return run(*o); };
    });

}  // namespace
}  // namespace posekd::cli::cmd_predict
