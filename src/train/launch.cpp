#include "posekd/train/launch.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "posekd/core/error.h"
#include "posekd/core/omp_wait.h"

namespace posekd::train {

namespace {

std::atomic<int> g_forward_signal{0};
extern "C" void on_launch_signal(int sig) { g_forward_signal.store(sig); }

void tell(const std::string& s) {
  std::fprintf(stderr, "posekd launch: %s\n", s.c_str());
  std::fflush(stderr);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(std::string("launch: cannot create a socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string err = std::strerror(errno);
    ::close(fd);
    throw Error("launch: cannot find a free port: " + err);
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

int launch(const LaunchOptions& o, const std::vector<std::string>& args) {
  if (o.nproc < 1) throw Error("launch: --nproc must be at least 1");
  if (o.nnodes < 1 || o.node_rank < 0 || o.node_rank >= o.nnodes)
    throw Error(fmt::format("launch: --node-rank {} is outside [0, {})", o.node_rank, o.nnodes));
  if (args.empty()) throw Error("launch: no command given (posekd launch --nproc 2 -- train ...)");
  if (o.nnodes > 1 && o.master_port == 0)
    throw Error("launch: several machines need an explicit --master-port (the same on every machine)");
  const int port = o.master_port != 0 ? o.master_port : free_local_port();
  std::string program = o.program;
  if (program.empty()) {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) throw Error("launch: cannot find the posekd executable (/proc/self/exe)");
    program.assign(buf, static_cast<size_t>(n));
  }
  const int world = o.nproc * o.nnodes;
  tell(fmt::format("{} process(es) on this machine (node {} of {}), world size {}, rendezvous {}:{}", o.nproc,
                   o.node_rank, o.nnodes, world, o.master_addr, port));

  g_forward_signal.store(0);
  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = on_launch_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::vector<pid_t> pids(static_cast<size_t>(o.nproc), -1);
  std::vector<bool> alive(static_cast<size_t>(o.nproc), false);
  for (int lr = 0; lr < o.nproc; ++lr) {
    const int rank = o.node_rank * o.nproc + lr;
    const pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("launch: fork failed: ") + std::strerror(errno));
    if (pid == 0) {
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(lr).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      // Ranks on one machine share its cores: OpenMP threads must sleep, not spin, while they wait
      // (core/omp_wait.h), unless the user chose. posekd's own idle-machine choice is overridden.
      const bool user_chose =
          (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) && !std::getenv(kOmpWaitReasonEnv);
      if (o.nproc > 1 && !user_chose) {
        ::unsetenv("GOMP_SPINCOUNT");
        ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        ::setenv(kOmpWaitReasonEnv, "set by posekd launch: the ranks share this machine's cores", 1);
      }
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(program.c_str()));
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(program.c_str(), argv.data());
      std::fprintf(stderr, "posekd launch: cannot run %s: %s\n", program.c_str(), std::strerror(errno));
      std::_Exit(127);
    }
    pids[static_cast<size_t>(lr)] = pid;
    alive[static_cast<size_t>(lr)] = true;
  }

  int result = 0;
  int running = o.nproc;
  bool stopping = false;
  auto kill_others = [&](int sig) {
    for (int lr = 0; lr < o.nproc; ++lr)
      if (alive[static_cast<size_t>(lr)]) ::kill(pids[static_cast<size_t>(lr)], sig);
  };
  std::chrono::steady_clock::time_point kill_deadline{};
  while (running > 0) {
    if (const int sig = g_forward_signal.exchange(0); sig != 0) {
      tell(fmt::format("got signal {}: passing it on to the ranks (they checkpoint and stop)", sig));
      kill_others(sig);
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      int lr = -1;
      for (int i = 0; i < o.nproc; ++i)
        if (pids[static_cast<size_t>(i)] == pid) lr = i;
      if (lr < 0) continue;
      alive[static_cast<size_t>(lr)] = false;
      --running;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok && !stopping) {
        result = exit_code_of(status);
        stopping = true;
        tell(fmt::format("rank {} (pid {}) {}; stopping the other {} rank(s) (resume from the last checkpoint)",
                         o.node_rank * o.nproc + lr, pid, describe_status(status), running));
        kill_others(SIGTERM);
        kill_deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(o.grace_s * 1000));
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;
    if (stopping && std::chrono::steady_clock::now() > kill_deadline) {
      tell(fmt::format("{} rank(s) still running {:.0f} s after SIGTERM: SIGKILL", running, o.grace_s));
      kill_others(SIGKILL);
      kill_deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (result == 0) tell(fmt::format("all {} rank(s) finished", o.nproc));
  return result;
}

}  // namespace posekd::train
