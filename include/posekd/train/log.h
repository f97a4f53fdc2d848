// Training log: the seed's log line (console and <output>/log.txt), results.csv, running averages.
#pragma once
#include <cstdint>
#include <cstdio>
#include <deque>
#include <string>

namespace posekd::train {

// "[HH:MM:SS] " for a wall-clock time (local time).
std::string time_prefix(std::int64_t unix_seconds);

// "ETA: 157.8h" when >= 1 hour remains, otherwise "ETA: 12.3m".
std::string format_eta(double seconds);

// The seed's line:
// "Batch {n}/{total} | Loss: {:.4f} | Student: {:.4f} | Distill: {:.4f} | Time: {:.1f}s | ETA: ..."
// `seconds_per_batch` is the mean over the logged interval; ETA = seconds_per_batch * (total - n).
std::string format_batch_line(std::int64_t batch, std::int64_t total, double loss, double student, double distill,
                              double seconds_per_batch);

// The seed logs every batch for the first 20, then every 10.
bool should_log(std::int64_t batch);

// Running sums since the last log line (the seed prints averages over the last interval).
struct RunningAverage {
  double loss = 0, student = 0, distill = 0, seconds = 0;
  std::int64_t count = 0;
  void add(double l, double s, double d, double sec) {
    loss += l; student += s; distill += d; seconds += sec; ++count;
  }
  void reset() { *this = RunningAverage{}; }
};

// Appends lines to <dir>/log.txt (and prints them), and rows to <dir>/results.csv.
class TrainLog {
 public:
  explicit TrainLog(const std::string& output_dir, bool quiet = false);
  ~TrainLog();
  TrainLog(const TrainLog&) = delete;
  TrainLog& operator=(const TrainLog&) = delete;
  void line(const std::string& text);  // prefixed with the time, printed and appended to log.txt
  // results.csv: batch,loss,student,distill,img_per_s,lr,phase,val_ap
  void csv(std::int64_t batch, double loss, double student, double distill, double img_per_s, double lr,
           const std::string& phase, double val_ap);

 private:
  std::FILE* log_ = nullptr;
  std::FILE* csv_ = nullptr;
  bool quiet_ = false;
};

}  // namespace posekd::train
