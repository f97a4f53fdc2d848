// results.png: loss parts and validation AP over batches, the QAT switch marked (OpenCV drawing;
// no plotting library needed). `posekd plot DIR` redraws it from DIR/results.csv at any time.
#pragma once
#include <string>
#include <vector>

namespace posekd::train {

struct ResultsRow {
  long long batch = 0;
  double loss = 0, student = 0, distill = 0, img_per_s = 0, lr = 0;
  std::string phase;
  double val_ap = -1;  // -1 = not evaluated at this row
};

// Reads results.csv (header + rows); malformed rows are an error naming the file and line.
std::vector<ResultsRow> read_results_csv(const std::string& path);

// Writes the chart; returns false (and writes nothing) when there is no row.
bool plot_results(const std::vector<ResultsRow>& rows, const std::string& png_path, const std::string& title);

}  // namespace posekd::train
