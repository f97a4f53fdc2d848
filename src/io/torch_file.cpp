#include "posekd/io/torch_file.h"

#include <caffe2/serialize/inline_container.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <unordered_map>

#include "posekd/core/error.h"
#include "posekd/io/pickle.h"

namespace posekd::io {

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

namespace {

const char kChecksumRecord[] = "posekd_checksum";

// The legacy magic-number pickle: PROTO 2, LONG1 10 bytes 0x1950a86a20f9469cfc6c, STOP.
const uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

FileFormat detect_bytes(const std::string& d) {
  if (d.size() >= 4 && std::memcmp(d.data(), "PK\x03\x04", 4) == 0) return FileFormat::Zip;
  if (d.size() >= sizeof kLegacyMagic && std::memcmp(d.data(), kLegacyMagic, sizeof kLegacyMagic) == 0)
    return FileFormat::Legacy;
  if (d.size() >= 2 && static_cast<uint8_t>(d[0]) == 0x80 && static_cast<uint8_t>(d[1]) <= 5) return FileFormat::Pickle;
  return FileFormat::Unknown;
}

size_t element_size(torch::ScalarType t) { return c10::elementSize(t); }

// Parses ('storage', torch.<T>Storage, key, location, numel, ...) persistent ids.
struct StorageRef {
  torch::ScalarType dtype;
  std::string key;
  int64_t numel;
  Value view;  // legacy view metadata (None when absent)
};

StorageRef parse_pid(const Value& pid, const std::string& path, size_t offset) {
  auto bad = [&](const std::string& m) -> StorageRef {
    throw Error(path + ": " + m + " at offset " + std::to_string(offset));
  };
  if (!pid.is_tuple() || pid.size() < 5) return bad("persistent id is not a ('storage', ...) tuple");
  const auto& it = pid.items();
  if (!it[0].is_string() || it[0].as_string() != "storage")
    return bad("persistent id of unsupported kind " + it[0].describe());
  if (!it[1].is_object()) return bad("storage type is not a class but " + it[1].type_name());
  const auto& cls = it[1].object_data();
  StorageRef r;
  if ((cls.module != "torch" && cls.module != "torch.cuda") || !dtype_for_storage_class(cls.name, &r.dtype))
    return bad("unsupported storage class " + cls.qualified());
  if (!it[2].is_string()) return bad("storage key is not a string");
  r.key = it[2].as_string();
  if (!it[4].is_int() || it[4].as_int() < 0) return bad("storage size is not a non-negative int");
  r.numel = it[4].as_int();
  if (pid.size() > 5) r.view = it[5];
  return r;
}

// ------------------------------------------------------------------------------------------------
// Zip (stored entries only), bounds-checked.

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0, size = 0;
  uint32_t crc = 0;
};

class ZipReader {
 public:
  ZipReader(const std::string& data, const std::string& path) : d_(data), path_(path) { parse(); }
  const std::map<std::string, ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  // Returns a pointer to the record's bytes after verifying its CRC.
  const uint8_t* read(const ZipEntry& e) const {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(d_.data()) + e.data_offset;
    if (crc32(p, e.size) != e.crc)
      throw Error(path_ + ": checksum mismatch in zip record '" + e.name + "' (data at offset " +
                  std::to_string(e.data_offset) + ")");
    return p;
  }

 private:
  [[noreturn]] void fail(const std::string& m, uint64_t off) const {
    throw Error(path_ + ": " + m + " at offset " + std::to_string(off));
  }
  void need(uint64_t off, uint64_t n, const char* what) const {
    if (off > d_.size() || n > d_.size() - off) fail(std::string("truncated zip file (") + what + ")", off);
  }
  uint64_t le(uint64_t off, int n) const {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(d_.data()) + off;
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }
  void parse() {
    const uint64_t n = d_.size();
    if (n < 22) fail("truncated zip file (no end of central directory)", n);
    // Find the end-of-central-directory record.
    uint64_t eocd = UINT64_MAX;
    uint64_t lo = n > 22 + 65535 ? n - 22 - 65535 : 0;
    for (uint64_t i = n - 22 + 1; i-- > lo;) {
      if (le(i, 4) == 0x06054b50 && i + 22 + le(i + 20, 2) == n) {
        eocd = i;
        break;
      }
    }
    if (eocd == UINT64_MAX) fail("truncated or corrupt zip file (end of central directory not found)", n);
    uint64_t count = le(eocd + 10, 2), cd_size = le(eocd + 12, 4), cd_off = le(eocd + 16, 4);
    if (count == 0xffff || cd_size == 0xffffffff || cd_off == 0xffffffff) {
      // zip64: locator just before the EOCD.
      if (eocd < 20 || le(eocd - 20, 4) != 0x07064b50) fail("corrupt zip64 locator", eocd);
      uint64_t z = le(eocd - 20 + 8, 8);
      need(z, 56, "zip64 end of central directory");
      if (le(z, 4) != 0x06064b50) fail("corrupt zip64 end of central directory", z);
      count = le(z + 32, 8);
      cd_size = le(z + 40, 8);
      cd_off = le(z + 48, 8);
    }
    need(cd_off, cd_size, "central directory");
    uint64_t p = cd_off, end = cd_off + cd_size;
    for (uint64_t i = 0; i < count; ++i) {
      if (p + 46 > end) fail("corrupt zip central directory", p);
      if (le(p, 4) != 0x02014b50) fail("corrupt zip central directory entry", p);
      uint64_t method = le(p + 10, 2);
      ZipEntry e;
      e.crc = static_cast<uint32_t>(le(p + 16, 4));
      uint64_t csize = le(p + 20, 4), usize = le(p + 24, 4);
      uint64_t nlen = le(p + 28, 2), xlen = le(p + 30, 2), clen = le(p + 32, 2);
      uint64_t loff = le(p + 42, 4);
      if (p + 46 + nlen + xlen + clen > end) fail("corrupt zip central directory entry", p);
      e.name.assign(d_.data() + p + 46, nlen);
      // zip64 extra field
      uint64_t x = p + 46 + nlen, xend = x + xlen;
      while (x + 4 <= xend) {
        uint64_t id = le(x, 2), sz = le(x + 2, 2);
        if (x + 4 + sz > xend) fail("corrupt zip extra field", x);
        if (id == 1) {
          uint64_t q = x + 4;
          auto take = [&](uint64_t& v) {
            if (v == 0xffffffff) {
              if (q + 8 > x + 4 + sz) fail("corrupt zip64 extra field", x);
              v = le(q, 8);
              q += 8;
            }
          };
          take(usize);
          take(csize);
          take(loff);
        }
        x += 4 + sz;
      }
      if (method != 0) fail("zip record '" + e.name + "' is compressed (only stored records are supported)", p);
      if (csize != usize) fail("zip record '" + e.name + "' has inconsistent sizes", p);
      need(loff, 30, "local header");
      if (le(loff, 4) != 0x04034b50) fail("corrupt zip local header for '" + e.name + "'", loff);
      e.data_offset = loff + 30 + le(loff + 26, 2) + le(loff + 28, 2);
      e.size = usize;
      need(e.data_offset, e.size, ("record " + e.name).c_str());
      entries_[e.name] = e;
      p += 46 + nlen + xlen + clen;
    }
  }

  const std::string& d_;
  std::string path_;
  std::map<std::string, ZipEntry> entries_;
};

// CRC over every record except version/checksum (sorted by name, name and size included).
uint32_t content_checksum(const std::vector<std::pair<std::string, std::pair<const uint8_t*, size_t>>>& recs) {
  uint32_t c = 0;
  for (const auto& r : recs) {
    c = crc32(r.first.data(), r.first.size(), c);
    uint64_t sz = r.second.second;
    c = crc32(&sz, 8, c);
    c = crc32(r.second.first, r.second.second, c);
  }
  return c;
}

bool is_meta_record(const std::string& rel) {
  return rel == kChecksumRecord || rel == "version" || rel == ".data/version" || rel == "byteorder" ||
         rel.rfind(".data/", 0) == 0;
}

Value load_zip(const std::string& path, const std::string& data) {
  ZipReader zip(data, path);
  std::string prefix;
  bool found = false;
  for (const auto& kv : zip.entries()) {
    const std::string& n = kv.first;
    if (n.size() >= 8 && n.compare(n.size() - 8, 8, "data.pkl") == 0 && std::count(n.begin(), n.end(), '/') == 1) {
      prefix = n.substr(0, n.size() - 8);
      found = true;
      break;
    }
  }
  if (!found) fail_file(path, "zip file without <archive>/data.pkl (not a torch.save file)");
  const ZipEntry& pkl = *zip.find(prefix + "data.pkl");
  const uint8_t* pkl_data = zip.read(pkl);

  // Optional posekd checksum over the content.
  if (const ZipEntry* ck = zip.find(prefix + kChecksumRecord)) {
    const uint8_t* p = zip.read(*ck);
    std::string stored(reinterpret_cast<const char*>(p), ck->size);
    std::vector<std::pair<std::string, std::pair<const uint8_t*, size_t>>> recs;
    for (const auto& kv : zip.entries()) {
      if (kv.first.compare(0, prefix.size(), prefix) != 0) continue;
      std::string rel = kv.first.substr(prefix.size());
      if (is_meta_record(rel)) continue;
      recs.push_back({rel, {zip.read(kv.second), kv.second.size}});
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "crc32 %08x", content_checksum(recs));
    if (stored.rfind(buf, 0) != 0)
      fail_file(path, "checksum mismatch (stored '" + stored + "', computed '" + buf + "')");
  }

  std::unordered_map<std::string, torch::Tensor> storages;
  PersistentLoad pl = [&](const Value& pid, size_t offset) -> Value {
    StorageRef r = parse_pid(pid, path, offset);
    auto it = storages.find(r.key);
    if (it != storages.end()) {
      if (it->second.scalar_type() != r.dtype)
        throw Error(path + ": storage '" + r.key + "' used with two dtypes at offset " + std::to_string(offset));
      return Value::tensor(it->second);
    }
    const ZipEntry* e = zip.find(prefix + "data/" + r.key);
    if (!e) throw Error(path + ": missing zip record data/" + r.key + " at offset " + std::to_string(offset));
    size_t es = element_size(r.dtype);
    if (static_cast<uint64_t>(r.numel) > e->size / es)
      throw Error(path + ": storage '" + r.key + "' of " + std::to_string(r.numel) +
                  " elements is larger than its record (" + std::to_string(e->size) + " bytes) at offset " +
                  std::to_string(offset));
    const uint8_t* p = zip.read(*e);
    torch::Tensor t = torch::empty({r.numel}, torch::TensorOptions().dtype(r.dtype));
    if (r.numel) std::memcpy(t.data_ptr(), p, r.numel * es);
    storages.emplace(r.key, t);
    return Value::tensor(t);
  };
  PickleSource src{pkl_data, pkl.size, pkl.data_offset, path};
  return unpickle(src, pl);
}

// ------------------------------------------------------------------------------------------------
// Legacy format.

Value load_legacy(const std::string& path, const std::string& data) {
  const uint8_t* base = reinterpret_cast<const uint8_t*>(data.data());
  const size_t n = data.size();
  size_t pos = sizeof kLegacyMagic;
  auto next = [&](const PersistentLoad& pl) {
    PickleSource src{base + pos, n - pos, pos, path};
    size_t end = 0;
    Value v = unpickle(src, pl, &end);
    pos += end;
    return v;
  };
  Value proto = next(nullptr);
  if (!proto.is_int() || proto.as_int() != 1001)
    fail_file(path, "unsupported legacy torch.save protocol " + proto.describe());
  Value sys_info = next(nullptr);
  if (const Value* le = sys_info.find("little_endian"))
    if (le->is_bool() && !le->as_bool()) fail_file(path, "big-endian legacy files are not supported");

  std::unordered_map<std::string, torch::Tensor> roots, views;
  uint64_t total_bytes = 0;  // all storages must fit in the file
  PersistentLoad pl = [&](const Value& pid, size_t offset) -> Value {
    StorageRef r = parse_pid(pid, path, offset);
    auto bad = [&](const std::string& m) { throw Error(path + ": " + m + " at offset " + std::to_string(offset)); };
    torch::Tensor root;
    auto it = roots.find(r.key);
    if (it != roots.end()) {
      root = it->second;
      if (root.scalar_type() != r.dtype) bad("storage '" + r.key + "' used with two dtypes");
    } else {
      if (static_cast<uint64_t>(r.numel) > (n - std::min<uint64_t>(n, total_bytes)) / element_size(r.dtype))
        bad("storage '" + r.key + "' of " + std::to_string(r.numel) + " elements does not fit in the file");
      total_bytes += static_cast<uint64_t>(r.numel) * element_size(r.dtype);
      root = torch::empty({r.numel}, torch::TensorOptions().dtype(r.dtype));
      roots.emplace(r.key, root);
    }
    if (r.view.is_none()) return Value::tensor(root);
    // (view_key, offset, view_size): a slice of the root storage (very old files).
    if (!r.view.is_tuple() || r.view.size() != 3) bad("corrupt storage view metadata");
    const auto& v = r.view.items();
    if (!v[0].is_string() || !v[1].is_int() || !v[2].is_int()) bad("corrupt storage view metadata");
    auto vit = views.find(v[0].as_string());
    if (vit != views.end()) return Value::tensor(vit->second);
    int64_t off = v[1].as_int(), sz = v[2].as_int();
    if (off < 0 || sz < 0 || off > root.numel() - sz) bad("storage view outside its root storage");
    torch::Tensor view = root.narrow(0, off, sz);
    views.emplace(v[0].as_string(), view);
    return Value::tensor(view);
  };
  Value result = next(pl);
  size_t keys_pos = pos;
  Value keys = next(nullptr);
  if (!keys.is_list())
    throw Error(path + ": legacy storage key list is not a list at offset " + std::to_string(keys_pos));
  for (const auto& k : keys.items()) {
    if (!k.is_string())
      throw Error(path + ": legacy storage key is not a string at offset " + std::to_string(keys_pos));
    auto it = roots.find(k.as_string());
    if (it == roots.end())
      throw Error(path + ": storage '" + k.as_string() + "' is not referenced by the pickle at offset " +
                  std::to_string(pos));
    torch::Tensor& t = it->second;
    if (n - pos < 8)
      throw Error(path + ": truncated file (storage '" + k.as_string() + "' header) at offset " + std::to_string(pos));
    int64_t count;
    std::memcpy(&count, base + pos, 8);
    if (count != t.numel())
      throw Error(path + ": storage '" + k.as_string() + "' has " + std::to_string(count) + " elements, expected " +
                  std::to_string(t.numel()) + " at offset " + std::to_string(pos));
    pos += 8;
    size_t bytes = static_cast<size_t>(count) * element_size(t.scalar_type());
    if (n - pos < bytes)
      throw Error(path + ": truncated file (storage '" + k.as_string() + "' needs " + std::to_string(bytes) +
                  " bytes, " + std::to_string(n - pos) + " left) at offset " + std::to_string(pos));
    if (bytes) std::memcpy(t.data_ptr(), base + pos, bytes);
    pos += bytes;
  }
  if (roots.size() != keys.size())
    throw Error(path + ": " + std::to_string(roots.size() - std::min(roots.size(), keys.size())) +
                " referenced storages have no data at offset " + std::to_string(pos));
  return result;
}

}  // namespace

FileFormat detect_format(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_file(path, std::string("cannot open for reading: ") + std::strerror(errno));
  std::string head(sizeof kLegacyMagic, '\0');
  f.read(head.data(), head.size());
  head.resize(static_cast<size_t>(f.gcount()));
  return detect_bytes(head);
}

Value load_torch_file(const std::string& path) {
  std::string data = read_file_bytes(path);
  switch (detect_bytes(data)) {
    case FileFormat::Zip:
      return load_zip(path, data);
    case FileFormat::Legacy:
      return load_legacy(path, data);
    default:
      fail_file(path, "not a torch.save file (neither a zip archive nor the legacy magic number) at offset 0");
  }
}

Value load_any_file(const std::string& path) {
  std::string data = read_file_bytes(path);
  switch (detect_bytes(data)) {
    case FileFormat::Zip:
      return load_zip(path, data);
    case FileFormat::Legacy:
      return load_legacy(path, data);
    case FileFormat::Pickle: {
      PickleSource src{reinterpret_cast<const uint8_t*>(data.data()), data.size(), 0, path};
      return unpickle(src);
    }
    default:
      fail_file(path, "not a torch.save file or pickle at offset 0");
  }
}

// ------------------------------------------------------------------------------------------------
// Writing

namespace {

void write_all_fsync(const std::string& tmp, const std::string& final_path, const std::string& bytes) {
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_file(final_path, std::string("cannot create ") + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail_file(final_path, std::string("write failed: ") + std::strerror(e));
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail_file(final_path, std::string("fsync failed: ") + std::strerror(e));
  }
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail_file(final_path, std::string("close failed: ") + std::strerror(e));
  }
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail_file(final_path, std::string("rename failed: ") + std::strerror(e));
  }
  std::filesystem::path dir = std::filesystem::path(final_path).parent_path();
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: some filesystems refuse fsync on directories
    ::close(dfd);
  }
}

}  // namespace

void save_torch_file(const std::string& path, const Value& value) {
  // Serialize everything in memory first: any error leaves the previous file untouched.
  std::vector<std::pair<std::string, torch::Tensor>> records;
  TensorStore store = [&](const torch::Tensor& t) {
    std::string key = std::to_string(records.size());
    records.emplace_back("data/" + key, t);
    return key;
  };
  std::string pkl;
  try {
    pkl = pickle_value(value, store);
  } catch (const Error& e) {
    fail_file(path, e.what());
  }
  std::vector<std::pair<std::string, std::pair<const uint8_t*, size_t>>> recs;
  recs.push_back({"data.pkl", {reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size()}});
  for (const auto& r : records)
    recs.push_back({r.first, {static_cast<const uint8_t*>(r.second.data_ptr()), r.second.nbytes()}});
  std::sort(recs.begin(), recs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  char ck[32];
  std::snprintf(ck, sizeof ck, "crc32 %08x\n", content_checksum(recs));

  std::string bytes;
  try {
    caffe2::serialize::PyTorchStreamWriter w([&](const void* buf, size_t n) -> size_t {
      bytes.append(static_cast<const char*>(buf), n);
      return n;
    });
    w.writeRecord("data.pkl", pkl.data(), pkl.size());
    for (const auto& r : records) w.writeRecord(r.first, r.second.data_ptr(), r.second.nbytes());
    w.writeRecord(kChecksumRecord, ck, std::strlen(ck));
    w.writeEndOfFile();
  } catch (const c10::Error& e) {
    fail_file(path, std::string("zip writer failed: ") + e.what_without_backtrace());
  }
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  write_all_fsync(tmp, path, bytes);
}

Value to_value(const StateDict& sd) {
  Value d = Value::dict();
  for (const auto& kv : sd) d.set(kv.first, Value::tensor(kv.second));
  return d;
}

StateDict to_state_dict(const Value& v, const std::string& what) {
  StateDict out;
  for (const auto& kv : v.dict_data(what).items) {
    if (!kv.first.is_string()) throw Error(what + ": key " + kv.first.describe() + " is not a string");
    const std::string& k = kv.first.as_string();
    out.emplace_back(k, kv.second.as_tensor(what + "['" + k + "']"));
  }
  return out;
}

}  // namespace posekd::io
