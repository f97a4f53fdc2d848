#include "posekd/export/npy.h"

#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "posekd/core/error.h"

namespace posekd::deploy {
namespace {

struct DtypeInfo {
  torch::ScalarType type;
  const char* descr;
};

const DtypeInfo kDtypes[] = {
    {torch::kLong, "<i8"}, {torch::kInt, "<i4"},  {torch::kShort, "<i2"}, {torch::kChar, "|i1"},
    {torch::kByte, "|u1"}, {torch::kBool, "|b1"}, {torch::kFloat, "<f4"}, {torch::kDouble, "<f8"},
};

const char* descr_of(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.descr;
  return nullptr;
}

bool little_endian() {
  const std::uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

}  // namespace

std::string npy_header_dict(const torch::Tensor& t) {
  const char* descr = descr_of(t.scalar_type());
  if (!descr) throw Error(fmt::format("npy: unsupported dtype {}", c10::toString(t.scalar_type())));
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) {
    shape += std::to_string(t.size(i));
    if (t.dim() == 1 || i + 1 < t.dim()) shape += t.dim() == 1 ? "," : ", ";
  }
  shape += ")";
  return fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr, shape);
}

void save_npy(const std::string& path, const torch::Tensor& tensor) {
  if (!little_endian()) fail_file(path, "NPY writing needs a little-endian host");
  if (!descr_of(tensor.scalar_type()))
    fail_file(path, fmt::format("cannot write dtype {} as NPY", c10::toString(tensor.scalar_type())));
  const auto t = tensor.detach().to(torch::kCPU).contiguous();
  std::string header = npy_header_dict(t);
  // magic(6) + version(2) + len(2) + header + '\n' padded to a multiple of 64
  std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 65535) fail_file(path, "NPY header too long");
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail_file(path, "cannot open for writing");
  const char magic[] = "\x93NUMPY\x01\x00";
  f.write(magic, 8);
  const std::uint16_t hl = static_cast<std::uint16_t>(header.size());
  const char len[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
  f.write(len, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  f.close();
  if (!f) fail_file(path, "write failed");
}

torch::Tensor load_npy(const std::string& path) {
  if (!little_endian()) fail_file(path, "NPY reading needs a little-endian host");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_file(path, "cannot open NPY file");
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) fail_file(path, "not an NPY file (bad magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t hl = 0, start = 0;
  if (major == 1) {
    hl = static_cast<unsigned char>(bytes[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail_file(path, "truncated NPY header");
    for (int i = 0; i < 4; ++i) hl |= static_cast<std::size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    start = 12;
  } else {
    fail_file(path, fmt::format("unsupported NPY version {}", major));
  }
  if (start + hl > bytes.size()) fail_file(path, "truncated NPY header");
  const std::string header = bytes.substr(start, hl);
  auto field = [&](const std::string& key) -> std::string {
    auto p = header.find("'" + key + "'");
    if (p == std::string::npos) fail_file(path, "NPY header lacks '" + key + "'");
    p = header.find(':', p);
    if (p == std::string::npos) fail_file(path, "malformed NPY header");
    ++p;
    while (p < header.size() && header[p] == ' ') ++p;
    std::size_t e = p;
    if (header[p] == '(') {
      e = header.find(')', p);
      if (e == std::string::npos) fail_file(path, "malformed NPY shape");
      return header.substr(p, e - p + 1);
    }
    if (header[p] == '\'') {
      e = header.find('\'', p + 1);
      if (e == std::string::npos) fail_file(path, "malformed NPY header");
      return header.substr(p + 1, e - p - 1);
    }
    while (e < header.size() && header[e] != ',' && header[e] != '}') ++e;
    return header.substr(p, e - p);
  };
  const std::string descr = field("descr"), fortran = field("fortran_order"), shape_s = field("shape");
  if (fortran != "False") fail_file(path, "Fortran-order NPY arrays are not supported");
  torch::ScalarType type = torch::kLong;
  bool found = false;
  for (const auto& d : kDtypes)
    if (descr == d.descr ||
        (descr.size() == 3 && descr[0] == '=' && descr.substr(1) == std::string(d.descr).substr(1))) {
      type = d.type;
      found = true;
    }
  if (!found) fail_file(path, "unsupported NPY dtype '" + descr + "'");
  std::vector<int64_t> shape;
  std::size_t i = 1;
  while (i < shape_s.size()) {
    while (i < shape_s.size() && (shape_s[i] == ' ' || shape_s[i] == ',')) ++i;
    if (i >= shape_s.size() || shape_s[i] == ')') break;
    std::size_t e = i;
    while (e < shape_s.size() && std::isdigit(static_cast<unsigned char>(shape_s[e]))) ++e;
    if (e == i) fail_file(path, "malformed NPY shape " + shape_s);
    shape.push_back(std::stoll(shape_s.substr(i, e - i)));
    i = e;
  }
  auto t = torch::empty(shape, torch::TensorOptions().dtype(type));
  const std::size_t nbytes = static_cast<std::size_t>(t.numel() * t.element_size());
  const std::size_t data = start + hl;
  if (bytes.size() - data != nbytes)
    fail_file(path, fmt::format("NPY data has {} bytes, shape {} needs {}", bytes.size() - data, shape_s, nbytes));
  if (nbytes) std::memcpy(t.data_ptr(), bytes.data() + data, nbytes);
  return t;
}

}  // namespace posekd::deploy
