// Training checkpoints: the seed's dict {'batch','model','optimizer','loss','best_loss'} in PyTorch's
// own layout (Python torch.load reads it; posekd resumes a seed checkpoint written by Python), plus a
// 'posekd' entry with everything else exact resume needs (data order, phase, running averages, ...).
// Files are written atomically with an embedded checksum (io::save_torch_file).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "posekd/data/loader.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/student.h"
#include "posekd/train/adam_state.h"
#include "posekd/train/log.h"

namespace posekd::train {

struct Checkpoint {
  std::int64_t batch = 0;
  io::StateDict model;
  AdamSnapshot optimizer;
  double loss = 0, best_loss = 1e30;
  // posekd extras (absent in seed checkpoints: then defaults)
  bool has_extras = false;
  std::string arch;             // student architecture
  std::string phase = "float";  // "float" or "qat"
  std::int64_t qat_start_batch = -1;
  data::LoaderState loader;  // where the data stream stands (and the bad samples so far)
  RunningAverage avg;        // the running sums since the last log line
  std::int64_t nonfinite_skipped = 0;
  double best_metric = -1;  // best validation AP (-1: none yet)
  std::string teacher_id;   // identity of the teacher the run distils from ("" = none)
  std::uint64_t seed = 0;
};

io::Value checkpoint_to_value(const Checkpoint& c);
// `path` names the source in errors. Accepts posekd's and the seed's checkpoints.
Checkpoint checkpoint_from_value(const io::Value& v, const std::string& path);

void save_checkpoint(const std::string& path, const Checkpoint& c);
Checkpoint load_checkpoint(const std::string& path);

// Where training starts (seed order): explicit --checkpoint, then --resume, then <output>/latest.pth,
// then <output>/best.pth. A damaged latest.pth falls back to the newest loadable batch_*.pth (said in
// `note`). Returns nullopt when there is nothing to resume.
struct ResumePoint {
  std::string path;
  Checkpoint checkpoint;
  std::string note;  // human-readable: what was chosen and why
};
std::optional<ResumePoint> find_resume_point(const std::string& explicit_checkpoint, const std::string& resume,
                                             const std::string& output_dir);

// Puts a float-mode student into the QAT structure a QAT checkpoint was saved from: BN fused (its
// keys gone), every layer in quantized mode. Values (thresholds, bits, ...) then come from the file.
void enter_qat_structure(model::Student& student);

// The student a checkpoint holds, ready for inference (eval mode): its arch is the checkpoint's
// (posekd) or `arch_fallback` (seed checkpoints have none), float or QAT as saved. Accepts posekd and
// seed training checkpoints and ai8x-style {'state_dict', 'arch'} files. Errors name `path`.
std::shared_ptr<model::Student> load_student(const std::string& path, const std::string& arch_fallback = "seed");

// Deletes batch_*.pth in `dir` beyond the newest `keep` (keep <= 0: nothing is deleted).
int prune_batch_checkpoints(const std::string& dir, int keep);

// "batch_000100.pth"
std::string batch_checkpoint_name(std::int64_t batch);

}  // namespace posekd::train
