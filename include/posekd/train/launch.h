// `posekd launch`: torchrun for posekd. Starts N copies of a posekd command on this machine with the
// torchrun environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
// forwards SIGINT/SIGTERM to them, and when one fails stops the others (SIGTERM, then SIGKILL after
// a grace period) so that a lost rank ends the whole job in bounded time.
#pragma once
#include <string>
#include <vector>

namespace posekd::train {

struct LaunchOptions {
  int nproc = 1;      // processes on this machine
  int nnodes = 1;     // machines
  int node_rank = 0;  // this machine's index
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: a free port (one machine only; several machines must agree on one)
  double grace_s = 30;  // after a failure: seconds between SIGTERM and SIGKILL for the others
  std::string program;  // the posekd executable ("" = this process's own, /proc/self/exe)
};

// Runs `args` (a posekd subcommand and its options, e.g. {"train", "--data", ...}) as
// nproc processes; returns 0 when all succeed, else the first failure's exit code (128+signal when
// killed). Messages go to stderr, prefixed "posekd launch:". Throws posekd::Error on bad options.
int launch(const LaunchOptions& o, const std::vector<std::string>& args);

// A TCP port that is free on 127.0.0.1 right now.
int free_local_port();

}  // namespace posekd::train
