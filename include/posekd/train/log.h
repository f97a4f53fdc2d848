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

// The terminal progress bar: "[####------]  12.3% | batch 123/1000 | loss 0.1234 (S 0.1000, D 0.2000) |
// 45.1 img/s | ETA 12.3m", the bar `width` characters wide.
std::string format_progress(std::int64_t batch, std::int64_t total, double loss, double student, double distill,
                            double img_per_s, double eta_seconds, int width = 20);

// The seed logs every batch for the first 20, then every 10.
bool should_log(std::int64_t batch);

// Running sums since the last log line (the seed prints averages over the last interval).
struct RunningAverage {
  double loss = 0, student = 0, distill = 0, seconds = 0;
  std::int64_t count = 0;
  void add(double l, double s, double d, double sec) {
    loss += l;
    student += s;
    distill += d;
    seconds += sec;
    ++count;
  }
  void reset() { *this = RunningAverage{}; }
};

// Appends lines to <dir>/log.txt (and prints them), and rows to <dir>/results.csv. With an empty
// `output_dir` nothing is written (the non-zero ranks of a distributed run). On a terminal (stdout is
// a tty, not quiet) the per-batch lines go to log.txt only and the console shows a progress bar.
class TrainLog {
 public:
  explicit TrainLog(const std::string& output_dir, bool quiet = false);
  ~TrainLog();
  TrainLog(const TrainLog&) = delete;
  TrainLog& operator=(const TrainLog&) = delete;
  void line(const std::string& text);  // prefixed with the time, printed and appended to log.txt
  // A per-batch line: printed only when there is no progress bar.
  void batch_line(const std::string& text);
  // Redraws the progress bar (no-op without a terminal).
  void progress(std::int64_t batch, std::int64_t total, double loss, double student, double distill, double img_per_s,
                double eta_seconds);
  bool has_progress_bar() const { return bar_; }
  // results.csv: batch,loss,student,distill,img_per_s,lr,phase,val_ap
  void csv(std::int64_t batch, double loss, double student, double distill, double img_per_s, double lr,
           const std::string& phase, double val_ap);

 private:
  std::FILE* log_ = nullptr;
  std::FILE* csv_ = nullptr;
  bool quiet_ = false;
  bool bar_ = false;        // stdout is a terminal: show the progress bar
  bool bar_shown_ = false;  // a bar is on the current console line
  void emit(const std::string& text, bool console);
};

}  // namespace posekd::train
