// `posekd plot DIR`: redraws DIR/results.png from DIR/results.csv.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "posekd/cli/registry.h"
#include "posekd/core/error.h"
#include "posekd/train/plot.h"

namespace posekd::cli::cmd_plot {  // named: the commands share unity-build translation units
namespace {

posekd::cli::Registration reg("plot", "Draw DIR/results.png (losses, validation AP, QAT switch) from DIR/results.csv",
                              [](CLI::App& app) -> posekd::cli::Runner {
                                auto dir = std::make_shared<std::string>();
                                app.add_option("dir", *dir, "training output directory")->required();
                                return [dir]() {
                                  namespace fs = std::filesystem;
                                  const std::string csv = (fs::path(*dir) / "results.csv").string();
                                  if (!fs::exists(csv))
                                    posekd::fail_file(csv, "does not exist (is this a training output directory?)");
                                  auto rows = posekd::train::read_results_csv(csv);
                                  const std::string png = (fs::path(*dir) / "results.png").string();
                                  if (!posekd::train::plot_results(rows, png, fs::path(*dir).filename().string()))
                                    posekd::fail_file(csv, "has no rows yet");
                                  std::printf("%s\n", png.c_str());
                                  return 0;
                                };
                              });

}  // namespace
}  // namespace posekd::cli::cmd_plot
