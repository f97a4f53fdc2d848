// `posekd export --checkpoint F --device MAX78000 --out DIR`: QAT checkpoint -> ai8x-synthesis files
// (ai8x checkpoints before/after quantize.py, network YAML, sample input + expected outputs, README).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include "posekd/cli/registry.h"
#include "posekd/core/threads.h"
#include "posekd/export/ai8x_export.h"
#include "posekd/export/fit.h"
#include "posekd/io/torch_file.h"
#include "posekd/train/checkpoint.h"

namespace posekd::cli::cmd_export {  // named: the commands share unity-build translation units
namespace {

struct Opts {
  std::string checkpoint, out, device = "MAX78000", arch = "ai85pose", name, dataset = "coco_pose", sample_image;
  long long epoch = -1;
  bool force = false;
  int threads = 2;
};

posekd::cli::Registration reg(
    "export", "Write ai8x-synthesis files (QAT/q8 checkpoints, network YAML, sample data) for a QAT student",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto o = std::make_shared<Opts>();
      app.add_option("--checkpoint", o->checkpoint, "QAT student checkpoint (posekd or ai8x layout)")->required();
      app.add_option("--out", o->out, "output folder")->required();
      app.add_option("--device", o->device, "MAX78000 | MAX78002")->capture_default_str();
      app.add_option("--arch", o->arch, "student architecture if the checkpoint does not record one")
          ->capture_default_str();
      app.add_option("--name", o->name, "file stem and ai8x arch name (default: the student's arch)");
      app.add_option("--dataset", o->dataset, "YAML dataset name (descriptive)")->capture_default_str();
      app.add_option("--epoch", o->epoch, "checkpoint 'epoch' (default: the checkpoint's batch count, else 0)");
      app.add_option("--sample-image", o->sample_image, "image for the sample input (default: synthetic)");
      app.add_flag("--force", o->force, "export even if the model does not fit the device");
      app.add_option("--threads", o->threads, "LibTorch threads")->capture_default_str();
      return [o]() {
        posekd::set_compute_threads(o->threads);
        auto student = posekd::train::load_student(o->checkpoint, o->arch);
        long long epoch = o->epoch;
        if (epoch < 0) {
          epoch = 0;
          auto v = posekd::io::load_torch_file(o->checkpoint);
          if (const auto* b = v.find("batch"); b && b->is_int())
            epoch = b->as_int();
          else if (const auto* e = v.find("epoch"); e && e->is_int())
            epoch = e->as_int();
        }
        posekd::deploy::ExportOptions opts;
        opts.name = o->name;
        opts.dataset = o->dataset;
        opts.epoch = epoch;
        opts.force = o->force;
        opts.sample_image = o->sample_image;
        opts.source = o->checkpoint;
        auto r = posekd::deploy::export_ai8x(*student, posekd::deploy::device_limits(o->device), o->out, opts);
        if (!r.fit.fits())
          std::fprintf(stderr, "warning: %s does not fit %s (%zu rules broken); exported because of --force\n",
                       student->arch().c_str(), r.fit.device.name.c_str(), r.fit.violations.size());
        std::printf("exported %s (%zu layers) for %s:\n", student->arch().c_str(), r.layers.size(),
                    r.fit.device.name.c_str());
        for (const auto* p :
             {&r.qat_path, &r.q8_path, &r.yaml_path, &r.sample_path, &r.heat_path, &r.paf_path, &r.readme_path})
          std::printf("  %s\n", p->c_str());
        if (!r.firmware_dir.empty())
          std::printf("  %s/ (C pose decoder, input preparation and firmware example: FIRMWARE.md)\n",
                      r.firmware_dir.c_str());
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_export
