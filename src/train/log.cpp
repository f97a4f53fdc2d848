#include "posekd/train/log.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>

#include "posekd/core/error.h"

namespace posekd::train {

std::string time_prefix(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  return fmt::format("[{:02d}:{:02d}:{:02d}] ", tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string format_eta(double seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds >= 3600.0) return fmt::format("ETA: {:.1f}h", seconds / 3600.0);
  return fmt::format("ETA: {:.1f}m", seconds / 60.0);
}

std::string format_batch_line(std::int64_t batch, std::int64_t total, double loss, double student, double distill,
                              double seconds_per_batch) {
  return fmt::format("Batch {}/{} | Loss: {:.4f} | Student: {:.4f} | Distill: {:.4f} | Time: {:.1f}s | {}", batch,
                     total, loss, student, distill, seconds_per_batch,
                     format_eta(seconds_per_batch * static_cast<double>(total - batch)));
}

std::string format_progress(std::int64_t batch, std::int64_t total, double loss, double student, double distill,
                            double img_per_s, double eta_seconds, int width) {
  const double frac = total > 0 ? std::clamp(static_cast<double>(batch) / static_cast<double>(total), 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(std::floor(frac * width));
  std::string eta = format_eta(eta_seconds);
  return fmt::format("[{}{}] {:5.1f}% | batch {}/{} | loss {:.4f} (S {:.4f}, D {:.4f}) | {:.1f} img/s | {}",
                     std::string(static_cast<size_t>(filled), '#'),
                     std::string(static_cast<size_t>(width - filled), '-'), 100.0 * frac, batch, total, loss, student,
                     distill, img_per_s, eta);
}

bool should_log(std::int64_t batch) { return batch <= 20 || batch % 10 == 0; }

TrainLog::TrainLog(const std::string& output_dir, bool quiet) : quiet_(quiet) {
  namespace fs = std::filesystem;
  bar_ = !quiet && ::isatty(STDOUT_FILENO) == 1;
  if (output_dir.empty()) return;
  std::error_code ec;
  fs::create_directories(output_dir, ec);
  const std::string log_path = (fs::path(output_dir) / "log.txt").string();
  const std::string csv_path = (fs::path(output_dir) / "results.csv").string();
  log_ = std::fopen(log_path.c_str(), "a");
  if (!log_) fail_file(log_path, "cannot open for appending (is the output directory writable?)");
  bool fresh = !fs::exists(csv_path) || fs::file_size(csv_path, ec) == 0;
  csv_ = std::fopen(csv_path.c_str(), "a");
  if (!csv_) fail_file(csv_path, "cannot open for appending");
  if (fresh) {
    std::fputs("batch,loss,student,distill,img_per_s,lr,phase,val_ap\n", csv_);
    std::fflush(csv_);
  }
}

TrainLog::~TrainLog() {
  if (bar_shown_) std::fputs("\n", stdout);
  if (log_) std::fclose(log_);
  if (csv_) std::fclose(csv_);
}

void TrainLog::emit(const std::string& text, bool console) {
  std::string s = time_prefix(std::time(nullptr)) + text;
  if (console && !quiet_) {
    if (bar_shown_) std::fputs("\r\033[K", stdout);  // the line replaces the bar; the next update redraws it
    bar_shown_ = false;
    std::fputs((s + "\n").c_str(), stdout);
    std::fflush(stdout);
  }
  if (log_) {
    std::fputs((s + "\n").c_str(), log_);
    std::fflush(log_);
  }
}

void TrainLog::line(const std::string& text) { emit(text, true); }

void TrainLog::batch_line(const std::string& text) { emit(text, !bar_); }

void TrainLog::progress(std::int64_t batch, std::int64_t total, double loss, double student, double distill,
                        double img_per_s, double eta_seconds) {
  if (!bar_) return;
  std::fputs(("\r\033[K" + format_progress(batch, total, loss, student, distill, img_per_s, eta_seconds)).c_str(),
             stdout);
  std::fflush(stdout);
  bar_shown_ = true;
}

void TrainLog::csv(std::int64_t batch, double loss, double student, double distill, double img_per_s, double lr,
                   const std::string& phase, double val_ap) {
  if (!csv_) return;
  std::string ap = val_ap >= 0 ? fmt::format("{:.4f}", val_ap) : std::string();
  std::fputs(fmt::format("{},{:.6f},{:.6f},{:.6f},{:.2f},{:.6g},{},{}\n", batch, loss, student, distill, img_per_s, lr,
                         phase, ap)
                 .c_str(),
             csv_);
  std::fflush(csv_);
}

}  // namespace posekd::train
