// `posekd skeleton`: prints the skeleton table (keypoints, limbs, COCO mapping, sigmas).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "posekd/cli/registry.h"
#include "posekd/core/skeleton.h"

namespace posekd::cli::cmd_skeleton {  // named: the commands share unity-build translation units
namespace {
namespace sk = posekd::skeleton;

posekd::cli::Registration reg(
    "skeleton", "Print the skeleton table (keypoints, limbs, mappings)", [](CLI::App&) -> posekd::cli::Runner {
      return []() {
        std::printf("%-3s %-7s %-5s %s\n", "id", "name", "coco", "sigma");
        for (int i = 0; i < sk::kNumKeypoints; ++i) {
          int c = sk::kOpenPoseToCoco[i];
          if (c >= 0)
            std::printf("%-3d %-7s %-5d %.3f\n", i, std::string(sk::kKeypointNames[i]).c_str(), c, sk::kOksSigmas[c]);
          else
            std::printf("%-3d %-7s %-5s %s\n", i, std::string(sk::kKeypointNames[i]).c_str(), "-", "-");
        }
        std::printf("\nlimb  a-b     PAF channels\n");
        for (int l = 0; l < sk::kNumLimbs; ++l)
          std::printf("%-5d %-7s %d,%d\n", l,
                      (std::string(sk::kKeypointNames[sk::kLimbs[l].a]) + "-" +
                       std::string(sk::kKeypointNames[sk::kLimbs[l].b]))
                          .c_str(),
                      2 * l, 2 * l + 1);
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_skeleton
