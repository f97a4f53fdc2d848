// `posekd predict IMAGE... --checkpoint F | --teacher F -o DIR`: decodes the people in each image,
// draws their skeletons to DIR/<stem>_pose.jpg and writes DIR/poses.json:
//   {"images": [{"file", "output", "width", "height", "persons": [{"keypoints": [51, COCO x,y,v],
//                "keypoint_scores": [17], "score"}]}, ...], "unreadable": [{"file", "error"}]}
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

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

struct Opts {
  std::vector<std::string> images;
  std::string checkpoint, teacher, output, arch = "seed";
  std::string precision = "auto";
  bool int8 = false;
  int threads = 0;
};

int run(const Opts& o) {
  using posekd::Error;
  namespace inf = posekd::infer;
  posekd::set_compute_threads(o.threads);
  const posekd::Precision prec = posekd::resolve_precision(o.precision);
  if (o.checkpoint.empty() == o.teacher.empty())
    throw Error("predict: give exactly one of --checkpoint FILE or --teacher FILE");
  if (o.int8 && o.checkpoint.empty()) throw Error("predict: --int8 needs --checkpoint (a QAT student checkpoint)");
  for (const auto& f : {o.checkpoint, o.teacher})
    if (!f.empty() && !fs::exists(f)) posekd::fail_file(f, "file not found");

  inf::EvalConfig cfg;
  inf::PredictFn predict;
  if (!o.teacher.empty()) {
    cfg = inf::teacher_eval_config();
    predict = inf::teacher_predictor(o.teacher, prec);
  } else {
    auto student = posekd::train::load_student(o.checkpoint, o.arch);
    predict = o.int8 ? inf::int8_predictor(*student, o.checkpoint) : inf::student_predictor(student, prec);
  }
  cfg.batch_size = 1;

  std::error_code ec;
  fs::create_directories(o.output, ec);
  if (!fs::is_directory(o.output)) posekd::fail_file(o.output, "cannot create the output directory");

  nlohmann::json out_images = nlohmann::json::array(), unreadable = nlohmann::json::array();
  int written = 0;
  for (size_t k = 0; k < o.images.size(); ++k) {
    const fs::path path(o.images[k]);
    auto fail = [&](const std::string& msg) {
      std::fprintf(stderr, "warning: %s\n", msg.c_str());
      unreadable.push_back({{"file", path.string()}, {"error", msg}});
    };
    posekd::data::CocoImage im;
    im.id = static_cast<int64_t>(k);
    im.file_name = path.filename().string();
    const auto preds = inf::predict_images({im}, path.parent_path().string(), predict, cfg);
    if (!preds[0].ok) {
      fail(preds[0].error);
      continue;
    }
    cv::Mat img = cv::imread(path.string(), cv::IMREAD_COLOR);
    if (img.empty()) {
      fail(path.string() + ": cannot read the image for drawing");
      continue;
    }
    const auto& poses = preds[0].poses;
    const fs::path dst = fs::path(o.output) / (path.stem().string() + "_pose.jpg");
    if (!cv::imwrite(dst.string(), inf::draw_poses(img, poses))) posekd::fail_file(dst.string(), "cannot write the image");
    ++written;
    nlohmann::json persons = nlohmann::json::array();
    for (const auto& p : poses) {
      const auto ks = inf::coco_keypoint_scores(p);
      persons.push_back({{"keypoints", std::vector<float>(p.keypoints.begin(), p.keypoints.end())},
                         {"keypoint_scores", std::vector<float>(ks.begin(), ks.end())},
                         {"score", p.score}});
    }
    out_images.push_back({{"file", path.string()},
                          {"output", dst.string()},
                          {"width", img.cols},
                          {"height", img.rows},
                          {"persons", persons}});
    std::fprintf(stderr, "predict: %s: %zu people -> %s\n", path.string().c_str(), poses.size(), dst.string().c_str());
  }
  const fs::path json_path = fs::path(o.output) / "poses.json";
  {
    std::ofstream f(json_path);
    if (!f) posekd::fail_file(json_path.string(), "cannot write");
    f << nlohmann::json{{"images", out_images}, {"unreadable", unreadable}}.dump(1) << "\n";
    if (!f) posekd::fail_file(json_path.string(), "write failed");
  }
  std::fprintf(stderr, "predict: wrote %d image(s) and %s\n", written, json_path.string().c_str());
  if (written == 0) throw Error("predict: no image could be read");
  return 0;
}

posekd::cli::Registration reg(
    "predict", "Draw the detected skeletons over images and write their keypoints as JSON",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<Opts>();
      app.add_option("images", o->images, "input images")->required();
      app.add_option("--checkpoint", o->checkpoint, "student checkpoint (posekd, seed or ai8x; float or QAT)");
      app.add_flag("--int8", o->int8, "integer (MAX78000) inference of the QAT checkpoint");
      app.add_option("--arch", o->arch, "student arch when the checkpoint does not name one")->capture_default_str();
      app.add_option("--teacher", o->teacher, "teacher checkpoint (legacy or zip torch.save)");
      app.add_option("-o,--output", o->output, "output directory")->required();
      app.add_option("--threads", o->threads, "compute threads (0 = all cores)")->capture_default_str();
      app.add_option("--precision", o->precision,
                     "float inference arithmetic: auto (bf16 where the CPU has bf16 units), fp32 or bf16")
          ->capture_default_str();
      return [o]() { return run(*o); };
    });

}  // namespace
}  // namespace posekd::cli::cmd_predict
