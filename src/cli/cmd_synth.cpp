// `posekd synth`: writes a deterministic synthetic-people COCO folder (and a contact sheet).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <memory>

#include <opencv2/imgcodecs.hpp>

#include "posekd/cli/registry.h"
#include "posekd/core/error.h"
#include "posekd/data/synth.h"

namespace posekd::cli::cmd_synth {  // named: the commands share unity-build translation units
namespace {

struct SynthOptions {
  std::string out;
  int train = 1000, val = 200;
  uint64_t seed = 1;
  int width = 160, height = 120;
  int min_people = 0, max_people = 4;
  double crowd_rate = 0.08;
  std::string contact_sheet;
  int sheet_count = 16;
};

posekd::cli::Registration reg(
    "synth", "Generate a synthetic-people COCO keypoint dataset (deterministic per seed)",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<SynthOptions>();
      app.add_option("--out", o->out, "Output folder (annotations/, train/, val/)")->required();
      app.add_option("--train", o->train, "Number of training images")->capture_default_str();
      app.add_option("--val", o->val, "Number of validation images")->capture_default_str();
      app.add_option("--seed", o->seed, "Random seed (train uses it, val a derived one)")->capture_default_str();
      app.add_option("--width", o->width, "Image width")->capture_default_str();
      app.add_option("--height", o->height, "Image height")->capture_default_str();
      app.add_option("--min-people", o->min_people, "Fewest labelled people per image")->capture_default_str();
      app.add_option("--max-people", o->max_people, "Most labelled people per image")->capture_default_str();
      app.add_option("--crowd-rate", o->crowd_rate, "Probability of an iscrowd region per image")
          ->capture_default_str();
      app.add_option("--contact-sheet", o->contact_sheet, "Also write a PNG tiling the first train images");
      app.add_option("--sheet-count", o->sheet_count, "Images on the contact sheet")->capture_default_str();
      return [o]() {
        posekd::data::SynthConfig train;
        train.images = o->train;
        train.seed = o->seed;
        train.width = o->width;
        train.height = o->height;
        train.min_people = o->min_people;
        train.max_people = o->max_people;
        train.crowd_rate = o->crowd_rate;
        posekd::data::SynthConfig val = train;
        val.images = o->val;
        val.seed = posekd::data::synth_mix(o->seed ^ 0x76616C5F73706C74ULL);  // "val_splt"
        const auto t0 = std::chrono::steady_clock::now();
        posekd::data::generate_synth(o->out, train, val);
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("wrote %d train + %d val images to %s in %.2f s\n", o->train, o->val, o->out.c_str(), sec);
        if (!o->contact_sheet.empty()) {
          const cv::Mat sheet = posekd::data::contact_sheet(o->out, o->train > 0 ? "train" : "val", o->sheet_count);
          bool ok = false;
          try {
            ok = cv::imwrite(o->contact_sheet, sheet);
          } catch (const cv::Exception&) {
            ok = false;
          }
          if (!ok) posekd::fail_file(o->contact_sheet, "cannot write contact sheet (use a .png or .jpg name)");
          std::printf("contact sheet: %s\n", o->contact_sheet.c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_synth
