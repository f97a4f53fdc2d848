#include "posekd/train/plot.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "posekd/core/error.h"

namespace posekd::train {

std::vector<ResultsRow> read_results_csv(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail_file(path, "cannot open");
  std::vector<ResultsRow> rows;
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (n == 1 || line.empty()) continue;
    std::vector<std::string> cols;
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, ',')) cols.push_back(c);
    if (!line.empty() && line.back() == ',') cols.push_back("");
    if (cols.size() != 8) fail_file(path, fmt::format("line {}: expected 8 columns, got {}", n, cols.size()));
    try {
      ResultsRow r;
      r.batch = std::stoll(cols[0]);
      r.loss = std::stod(cols[1]);
      r.student = std::stod(cols[2]);
      r.distill = std::stod(cols[3]);
      r.img_per_s = std::stod(cols[4]);
      r.lr = std::stod(cols[5]);
      r.phase = cols[6];
      r.val_ap = cols[7].empty() ? -1 : std::stod(cols[7]);
      rows.push_back(r);
    } catch (const std::exception&) {
      fail_file(path, fmt::format("line {}: not a number", n));
    }
  }
  return rows;
}

namespace {

struct Panel {
  cv::Rect area;
  double x0, x1, y0, y1;
  bool log_y;
  cv::Point at(double x, double y) const {
    double fy = log_y ? (std::log10(std::max(y, 1e-9)) - y0) / (y1 - y0) : (y - y0) / (y1 - y0);
    double fx = (x - x0) / std::max(1e-9, x1 - x0);
    return {area.x + static_cast<int>(fx * area.width), area.y + area.height - static_cast<int>(fy * area.height)};
  }
};

void axes(cv::Mat& img, const Panel& p, const std::string& ylabel) {
  cv::rectangle(img, p.area, cv::Scalar(90, 90, 90), 1);
  for (int i = 0; i <= 4; ++i) {
    double v = p.y0 + (p.y1 - p.y0) * i / 4.0;
    int y = p.area.y + p.area.height - p.area.height * i / 4;
    cv::line(img, {p.area.x, y}, {p.area.x + p.area.width, y}, cv::Scalar(225, 225, 225), 1);
    std::string t = p.log_y ? fmt::format("{:.3g}", std::pow(10.0, v)) : fmt::format("{:.2f}", v);
    cv::putText(img, t, {4, y + 4}, cv::FONT_HERSHEY_SIMPLEX, 0.35, cv::Scalar(60, 60, 60), 1, cv::LINE_AA);
  }
  for (int i = 0; i <= 4; ++i) {
    double v = p.x0 + (p.x1 - p.x0) * i / 4.0;
    int x = p.area.x + p.area.width * i / 4;
    cv::putText(img, fmt::format("{:.0f}", v), {x - 10, p.area.y + p.area.height + 14}, cv::FONT_HERSHEY_SIMPLEX, 0.35,
                cv::Scalar(60, 60, 60), 1, cv::LINE_AA);
  }
  cv::putText(img, ylabel, {p.area.x + 6, p.area.y + 14}, cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(0, 0, 0), 1,
              cv::LINE_AA);
}

}  // namespace

bool plot_results(const std::vector<ResultsRow>& rows, const std::string& png_path, const std::string& title) {
  if (rows.empty()) return false;
  const int W = 900, H = 620;
  cv::Mat img(H, W, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::putText(img, title, {60, 22}, cv::FONT_HERSHEY_SIMPLEX, 0.6, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  double x0 = static_cast<double>(rows.front().batch), x1 = static_cast<double>(rows.back().batch);
  if (x1 <= x0) x1 = x0 + 1;
  double lo = 1e300, hi = -1e300;
  for (const auto& r : rows)
    for (double v : {r.loss, r.student, r.distill})
      if (v > 0) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
  if (lo > hi) lo = hi = 1;
  Panel loss{cv::Rect(60, 40, W - 90, 330), x0, x1, std::floor(std::log10(lo)), std::ceil(std::log10(hi) + 1e-9), true};
  if (loss.y1 <= loss.y0) loss.y1 = loss.y0 + 1;
  axes(img, loss, "loss (log)");
  Panel ap{cv::Rect(60, 410, W - 90, 170), x0, x1, 0.0, 1.0, false};
  double ap_hi = 0;
  for (const auto& r : rows) ap_hi = std::max(ap_hi, r.val_ap);
  ap.y1 = ap_hi > 0 ? std::min(1.0, std::ceil(ap_hi * 10 + 1e-9) / 10.0) : 1.0;
  axes(img, ap, "validation AP");
  const cv::Scalar c_loss(40, 40, 200), c_student(200, 120, 30), c_distill(30, 150, 30), c_ap(150, 30, 150);
  auto series = [&](const Panel& p, auto get, cv::Scalar color) {
    cv::Point prev(-1, -1);
    for (const auto& r : rows) {
      double v = get(r);
      if (v <= 0 && p.log_y) continue;
      if (v < 0) continue;
      cv::Point pt = p.at(static_cast<double>(r.batch), v);
      if (prev.x >= 0) cv::line(img, prev, pt, color, 2, cv::LINE_AA);
      cv::circle(img, pt, 2, color, -1, cv::LINE_AA);
      prev = pt;
    }
  };
  series(
      loss, [](const ResultsRow& r) { return r.loss; }, c_loss);
  series(
      loss, [](const ResultsRow& r) { return r.student; }, c_student);
  series(
      loss, [](const ResultsRow& r) { return r.distill; }, c_distill);
  series(
      ap, [](const ResultsRow& r) { return r.val_ap; }, c_ap);
  // legend
  int lx = W - 250;
  int ly = 56;
  for (auto& [name, col] : std::vector<std::pair<std::string, cv::Scalar>>{{"total loss", c_loss},
                                                                           {"ground-truth loss", c_student},
                                                                           {"distillation loss", c_distill},
                                                                           {"val AP", c_ap}}) {
    cv::line(img, {lx, ly - 4}, {lx + 24, ly - 4}, col, 2);
    cv::putText(img, name, {lx + 30, ly}, cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
    ly += 18;
  }
  // QAT switch
  for (size_t i = 1; i < rows.size(); ++i) {
    if (rows[i].phase == "qat" && rows[i - 1].phase != "qat") {
      double xb = 0.5 * static_cast<double>(rows[i - 1].batch + rows[i].batch);
      for (const Panel* p : {&loss, &ap}) {
        cv::Point a = p->at(xb, p->log_y ? std::pow(10.0, p->y1) : p->y1);
        cv::Point b(a.x, p->area.y + p->area.height);
        cv::line(img, {a.x, p->area.y}, b, cv::Scalar(0, 140, 255), 1, cv::LINE_AA);
      }
      cv::putText(img, "QAT starts", {loss.at(xb, 1).x + 4, loss.area.y + 30}, cv::FONT_HERSHEY_SIMPLEX, 0.45,
                  cv::Scalar(0, 140, 255), 1, cv::LINE_AA);
    }
  }
  cv::putText(img, "batch", {W / 2, H - 8}, cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  if (!cv::imwrite(png_path, img)) fail_file(png_path, "cannot write the plot");
  return true;
}

}  // namespace posekd::train
