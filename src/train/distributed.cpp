#include "posekd/train/distributed.h"

// LibTorch's Gloo process group is compiled in (libtorch_cpu links libgloo), but its header hides it
// behind this macro; the gloo headers come from Debian's libgloo-dev.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <fmt/format.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

#include "posekd/core/error.h"

namespace posekd::train {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < -1 || x > 1000000)
    throw Error(fmt::format("distributed: environment variable {}='{}' is not a valid number", name, v));
  return static_cast<int>(x);
}

std::chrono::milliseconds to_ms(double s) { return std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000.0)); }

bool is_loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1"; }

}  // namespace

DistOptions resolve_dist_options(const DistOptions& f) {
  DistOptions o = f;
  if (o.world_size < 0) o.world_size = env_int("WORLD_SIZE", 1);
  if (o.rank < 0) o.rank = env_int("RANK", 0);
  if (o.local_rank < 0) o.local_rank = env_int("LOCAL_RANK", o.rank);
  if (o.local_world_size < 0) o.local_world_size = env_int("LOCAL_WORLD_SIZE", -1);
  if (o.master_addr.empty()) {
    const char* a = std::getenv("MASTER_ADDR");
    o.master_addr = (a != nullptr && *a != '\0') ? a : "127.0.0.1";
  }
  if (o.master_port < 0) o.master_port = env_int("MASTER_PORT", 29500);
  if (o.world_size < 1) throw Error(fmt::format("distributed: world size must be >= 1 (got {})", o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    throw Error(fmt::format("distributed: rank {} is outside [0, {}) (RANK / --rank vs WORLD_SIZE / --world-size)",
                            o.rank, o.world_size));
  if (o.master_port < 1 || o.master_port > 65535)
    throw Error(fmt::format("distributed: master port {} is outside [1, 65535]", o.master_port));
  if (o.local_world_size < 0) o.local_world_size = is_loopback(o.master_addr) ? o.world_size : 1;
  if (o.local_world_size < 1) o.local_world_size = 1;
  if (!(o.timeout_s > 0)) throw Error("distributed: --dist-timeout must be positive");
  return o;
}

struct Distributed::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

struct Distributed::Pending {
  c10::intrusive_ptr<c10d::Work> work;
};

namespace {

// The first line of an exception's message (c10::Error carries a backtrace after it).
std::string first_line(const std::exception& e) {
  std::string m = e.what();
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) m = ce->what_without_backtrace();
  const auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

[[noreturn]] void lost(int rank, const std::string& what, const std::exception& e) {
  throw Error(
      fmt::format("distributed: rank {} lost contact with the other ranks during {} ({}); the whole job "
                  "stops, resume it from the last checkpoint",
                  rank, what, first_line(e)));
}

// Gloo moves float, double, half and signed integer tensors; others travel as int32.
bool gloo_native(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kFloat64 || t == torch::kFloat16 || t == torch::kInt8 ||
         t == torch::kInt32 || t == torch::kInt64;
}

}  // namespace

Distributed::Distributed(const DistOptions& o) : impl_(std::make_unique<Impl>()) {
  rank_ = o.rank;
  world_ = o.world_size;
  timeout_s_ = o.timeout_s;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o.master_port);
    so.isServer = o.rank == 0;
    so.numWorkers = o.world_size;
    so.waitWorkers = true;
    so.timeout = to_ms(o.timeout_s);
    impl_->store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
  } catch (const std::exception& e) {
    throw Error(fmt::format("distributed: rank {} of {}: rendezvous at {}:{} failed ({})", o.rank, o.world_size,
                            o.master_addr, o.master_port, first_line(e)));
  }
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(to_ms(o.timeout_s));
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0')
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (is_loopback(o.master_addr))
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = 2;
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, o.rank, o.world_size, opts);
  } catch (const std::exception& e) {
    throw Error(fmt::format("distributed: rank {} of {}: cannot connect the Gloo group via {}:{} ({})", o.rank,
                            o.world_size, o.master_addr, o.master_port, first_line(e)));
  }
}

Distributed::~Distributed() = default;

std::shared_ptr<Distributed::Pending> Distributed::allreduce_sum_async(torch::Tensor& t) {
  std::vector<at::Tensor> v{t};
  auto p = std::make_shared<Pending>();
  try {
    p->work = impl_->pg->allreduce(v);
  } catch (const std::exception& e) {
    lost(rank_, "an all-reduce", e);
  }
  return p;
}

void Distributed::wait(const std::shared_ptr<Pending>& p) {
  try {
    p->work->wait(to_ms(timeout_s_));
  } catch (const std::exception& e) {
    lost(rank_, "an all-reduce", e);
  }
}

void Distributed::allreduce_sum(torch::Tensor& t) { wait(allreduce_sum_async(t)); }

void Distributed::allreduce_max(torch::Tensor& t) {
  std::vector<at::Tensor> v{t};
  c10d::AllreduceOptions ao;
  ao.reduceOp = c10d::ReduceOp::MAX;
  try {
    impl_->pg->allreduce(v, ao)->wait(to_ms(timeout_s_));
  } catch (const std::exception& e) {
    lost(rank_, "an all-reduce", e);
  }
}

void Distributed::allreduce_many(std::vector<torch::Tensor>& tensors, bool max) {
  torch::NoGradGuard ng;
  std::map<int, std::vector<size_t>> by_type;
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].defined() && tensors[i].numel() > 0) {
      const auto t = tensors[i].scalar_type();
      if (!gloo_native(t) || t == torch::kInt8)
        throw Error(fmt::format("distributed: cannot all-reduce a tensor of type {}", c10::toString(t)));
      by_type[static_cast<int>(t)].push_back(i);
    }
  for (auto& [type, idx] : by_type) {
    std::vector<torch::Tensor> parts;
    for (size_t i : idx) parts.push_back(tensors[i].reshape({-1}));
    torch::Tensor flat = parts.size() == 1 ? parts[0].clone() : torch::cat(parts);
    if (max)
      allreduce_max(flat);
    else
      allreduce_sum(flat);
    std::int64_t off = 0;
    for (size_t i : idx) {
      const std::int64_t n = tensors[i].numel();
      tensors[i].copy_(flat.narrow(0, off, n).view(tensors[i].sizes()));
      off += n;
    }
  }
}

void Distributed::allreduce_sum(std::vector<torch::Tensor>& tensors) { allreduce_many(tensors, false); }
void Distributed::allreduce_max(std::vector<torch::Tensor>& tensors) { allreduce_many(tensors, true); }

std::vector<double> Distributed::sum(const std::vector<double>& v) {
  torch::Tensor t = torch::tensor(v, torch::kFloat64);
  allreduce_sum(t);
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

std::vector<double> Distributed::max(const std::vector<double>& v) {
  torch::Tensor t = torch::tensor(v, torch::kFloat64);
  allreduce_max(t);
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

void Distributed::broadcast(std::vector<torch::Tensor>& tensors, int root) {
  torch::NoGradGuard ng;
  // Gloo broadcasts one tensor per call: pack each dtype into one flat buffer.
  std::map<int, std::vector<size_t>> by_type;
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].defined() && tensors[i].numel() > 0) {
      const auto t = tensors[i].scalar_type();
      by_type[static_cast<int>(gloo_native(t) ? t : torch::kInt32)].push_back(i);
    }
  for (auto& [type, idx] : by_type) {
    std::vector<torch::Tensor> parts;
    for (size_t i : idx) parts.push_back(tensors[i].reshape({-1}).to(static_cast<torch::ScalarType>(type)));
    std::vector<at::Tensor> flat{torch::cat(parts)};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    try {
      impl_->pg->broadcast(flat, bo)->wait(to_ms(timeout_s_));
    } catch (const std::exception& e) {
      lost(rank_, "a broadcast", e);
    }
    std::int64_t off = 0;
    for (size_t i : idx) {
      const std::int64_t n = tensors[i].numel();
      tensors[i].copy_(flat[0].narrow(0, off, n).view(tensors[i].sizes()));
      off += n;
    }
  }
}

std::string Distributed::broadcast_bytes(const std::string& bytes, int root) {
  std::vector<torch::Tensor> n{torch::tensor({static_cast<std::int64_t>(bytes.size())}, torch::kInt64)};
  broadcast(n, root);
  const std::int64_t size = n[0].item<std::int64_t>();
  if (size == 0) return {};
  torch::Tensor buf = torch::empty({size}, torch::kInt8);
  if (rank_ == root) std::memcpy(buf.data_ptr<std::int8_t>(), bytes.data(), bytes.size());
  std::vector<torch::Tensor> v{buf};
  broadcast(v, root);
  return std::string(reinterpret_cast<const char*>(v[0].data_ptr<std::int8_t>()), static_cast<size_t>(size));
}

void Distributed::barrier() {
  try {
    impl_->pg->barrier()->wait(to_ms(timeout_s_));
  } catch (const std::exception& e) {
    lost(rank_, "a barrier", e);
  }
}

// ---------------------------------------------------------------------------------------------- GradSync

GradSync::GradSync(Distributed& dist, const std::vector<torch::Tensor>& params, std::int64_t bucket_bytes)
    : dist_(dist) {
  for (const auto& p : params)
    if (p.requires_grad()) {
      if (p.scalar_type() != torch::kFloat32) throw Error("distributed: only float32 parameters can be synchronised");
      params_.push_back(p);
    }
  const int n = static_cast<int>(params_.size());
  bucket_of_.assign(static_cast<size_t>(n), -1);
  slot_of_.assign(static_cast<size_t>(n), -1);
  got_.assign(static_cast<size_t>(n), false);
  // Backward produces the last layers' gradients first: fill buckets from the end.
  std::int64_t bytes = 0;
  for (int i = n - 1; i >= 0; --i) {
    if (buckets_.empty() || bytes >= bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    bucket_of_[static_cast<size_t>(i)] = static_cast<int>(buckets_.size()) - 1;
    slot_of_[static_cast<size_t>(i)] = static_cast<int>(b.params.size());
    b.offsets.push_back(b.params.empty() ? 0
                                         : b.offsets.back() + params_[static_cast<size_t>(b.params.back())].numel());
    b.params.push_back(i);
    bytes += params_[static_cast<size_t>(i)].numel() * 4;
  }
  for (auto& b : buckets_) {
    const std::int64_t total = b.offsets.back() + params_[static_cast<size_t>(b.params.back())].numel();
    b.flat = torch::zeros({total}, torch::kFloat32);
  }
  reset();
  for (int i = 0; i < n; ++i)
    hook_ids_.push_back(params_[static_cast<size_t>(i)].register_hook([this, i](torch::Tensor g) { on_grad(i, g); }));
}

GradSync::~GradSync() {
  for (size_t i = 0; i < hook_ids_.size(); ++i) {
    try {
      params_[i].remove_hook(hook_ids_[i]);
    } catch (...) {  // a destructor must not throw; the hook dies with the tensor anyway
    }
  }
}

void GradSync::reset() {
  for (auto& b : buckets_) {
    b.pending = static_cast<int>(b.params.size());
    b.launched = false;
    b.work.reset();
  }
  std::fill(got_.begin(), got_.end(), false);
  next_launch_ = 0;
}

void GradSync::on_grad(int i, const torch::Tensor& grad) {
  torch::NoGradGuard ng;
  Bucket& b = buckets_[static_cast<size_t>(bucket_of_[static_cast<size_t>(i)])];
  if (b.launched) return;  // cannot happen with one backward per step
  const size_t s = static_cast<size_t>(slot_of_[static_cast<size_t>(i)]);
  torch::Tensor dst = b.flat.narrow(0, b.offsets[s], params_[static_cast<size_t>(i)].numel());
  if (got_[static_cast<size_t>(i)]) {
    dst.add_(grad.reshape({-1}));
    return;
  }
  dst.copy_(grad.reshape({-1}));
  got_[static_cast<size_t>(i)] = true;
  if (--b.pending == 0) {
    const int before = next_launch_;
    launch_ready();
    launched_in_backward_ += next_launch_ - before;
  }
}

void GradSync::launch_ready() {
  while (next_launch_ < static_cast<int>(buckets_.size()) && buckets_[static_cast<size_t>(next_launch_)].pending == 0) {
    Bucket& b = buckets_[static_cast<size_t>(next_launch_)];
    b.work = dist_.allreduce_sum_async(b.flat);
    b.launched = true;
    ++next_launch_;
  }
}

void GradSync::finish() {
  torch::NoGradGuard ng;
  // Whatever backward did not reach is a zero gradient (the same on every rank: the same graph).
  for (auto& b : buckets_) {
    if (b.launched) continue;
    for (size_t s = 0; s < b.params.size(); ++s) {
      const int i = b.params[s];
      if (!got_[static_cast<size_t>(i)]) {
        b.flat.narrow(0, b.offsets[s], params_[static_cast<size_t>(i)].numel()).zero_();
        got_[static_cast<size_t>(i)] = true;
      }
    }
    b.pending = 0;
  }
  last_overlap_ = launched_in_backward_;
  launched_in_backward_ = 0;
  launch_ready();
  const double inv = 1.0 / dist_.world_size();
  for (auto& b : buckets_) {
    dist_.wait(b.work);
    b.flat.mul_(inv);
    for (size_t s = 0; s < b.params.size(); ++s) {
      torch::Tensor& p = params_[static_cast<size_t>(b.params[s])];
      torch::Tensor avg = b.flat.narrow(0, b.offsets[s], p.numel()).view(p.sizes());
      torch::Tensor& g = p.mutable_grad();
      if (g.defined())
        g.copy_(avg);
      else
        g = avg.clone();
    }
  }
  reset();
}

int per_rank_batch(int global_batch, int world_size) {
  if (world_size < 1 || global_batch % world_size != 0 || global_batch < world_size)
    throw Error(fmt::format("distributed: --batch-size {} (the global batch) must be a multiple of the {} processes",
                            global_batch, world_size));
  return global_batch / world_size;
}

}  // namespace posekd::train
